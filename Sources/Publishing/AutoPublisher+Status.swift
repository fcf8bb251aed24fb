import Foundation
import ImageFS
import MetricsEndpoint
import NodeService
import OCI

extension AutoPublisher {
    /// A mount's automatic publishing (`mount --publish-to`): where it goes, how the runs went, what they pushed.
    /// It is `service.publishing` in `status.json` (field names are a contract, as `MountStatus` says) and the
    /// `mcvfs_publish*` metrics.
    public struct Status: Codable, Sendable, Equatable {
        /// `registry/repository` published to.
        public var repository: String
        public var intervalSeconds: Double
        /// The uppers harvested.
        public var uppers: [String]
        /// `sha256:<fingerprint>` of the signing key's public key; nil when images go unsigned.
        public var signingKey: String?
        public var runs = 0
        public var failures = 0
        /// Failures since the last run that worked (each is retried at the next interval).
        public var consecutiveFailures = 0
        /// RFC 3339 times.
        public var lastRun: String?
        public var lastSuccess: String?
        public var lastError: String?
        public var nextRun: String?
        public var imagesPushed = 0
        public var kernelsPublished = 0
        /// The tags the last run that pushed anything pushed.
        public var lastPushed: [String] = []
        /// Entries the last run left out, as `path: reason` (at most 20).
        public var lastSkipped: [String] = []

        public init(repository: String, intervalSeconds: Double, uppers: [String], signingKey: String?) {
            self.repository = repository
            self.intervalSeconds = intervalSeconds
            self.uppers = uppers
            self.signingKey = signingKey
        }

        /// The status in a mount's document, when it publishes.
        public init?(in document: MountStatus) {
            guard let section = document.service?.publishing, let status = try? section.decode(Self.self) else {
                return nil
            }
            self = status
        }

        /// What user `viewer` may read: their own upper and the entries a run left out of it. Other users' uppers
        /// and what was left out of them (KEY names say what someone compiles), and the last error (which may name
        /// them), are for root and the mount's owner.
        public func seen(by viewer: UInt32) -> Status {
            let own = [OverlayFileSystem.Isolation.perUser, .shared].map {
                OverlayFileSystem.upperName(isolation: $0, uid: viewer)
            }
            var status = self
            status.uppers = uppers.filter { own.contains(($0 as NSString).lastPathComponent) }
            status.lastSkipped = lastSkipped.filter { entry in status.uppers.contains { entry.hasPrefix($0 + "/") } }
            if lastError != nil { status.lastError = "hidden: root and the mount's owner see it" }
            return status
        }

        /// Its counters in the scrape.
        public var metricFamilies: [MetricFamily] {
            [
                .single(
                    "mcvfs_publish_runs_total", help: "Automatic publishes run (--publish-to).", kind: .counter,
                    value: Double(runs)),
                .single(
                    "mcvfs_publish_failures_total",
                    help: "Automatic publishes that failed (retried at the next interval).", kind: .counter,
                    value: Double(failures)),
                .single(
                    "mcvfs_published_images_total", help: "Cache images this mount pushed.", kind: .counter,
                    value: Double(imagesPushed)),
                .single(
                    "mcvfs_published_kernels_total", help: "Kernels this mount published.", kind: .counter,
                    value: Double(kernelsPublished)),
            ]
        }
    }
}

extension AutoPublisher: MountActivity {
    public func statusSection(for viewer: UInt32?) -> JSONValue? {
        try? JSONValue(encoding: viewer.map(status.seen(by:)) ?? status)
    }

    public var metricFamilies: [MetricFamily] { status.metricFamilies }
}
