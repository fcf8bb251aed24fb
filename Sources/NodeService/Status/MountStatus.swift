import Foundation
import ImageFS
import OCI
import RemoteLayers
import Synchronization

/// `MOUNTPOINT/.mcvfs/status.json`: what a mount uses and skips, what fetching cost and found, its uppers and its
/// node-service state. One type for the daemon that writes it and for `mcvfs status` and `mcvfs export`, which
/// read it.
///
/// **Compatibility.** The field names are a contract (readiness probes, dashboards and tests read them). A newer
/// `mcvfs status` reads the documents of daemons an older binary started, since mounts run through upgrades: so
/// every field added after the first release is an optional (it decodes as nil from an older document), and
/// unknown fields are ignored. Add fields that way.
public struct MountStatus: Codable, Sendable, Equatable {
    /// One image of the catalog, used or skipped.
    public struct Image: Codable, Sendable, Equatable {
        public var name: String
        public var digest: String?
        public var targets: [String]?
        /// Used images: their layer digests.
        public var layers: [String]?
        /// Skipped images: why.
        public var reason: String?
        /// Under a signature policy: who signed the image.
        public var signedBy: [String]?
        /// Used images: pending, loading, loaded or failed.
        public var state: ImageSet.Status.Phase?
        /// Used images: loads that failed so far, why the last one failed, and when a failed image is retried.
        public var failures: Int?
        public var error: String?
        public var nextRetry: Date?
        /// Used images: where the image ranks when two have a KEY (`Precedence`: base, or added by a node or a
        /// refresh).
        public var precedence: String?
        /// Used images with eStargz layers, once loaded: what their `toc.digest` annotations are worth (`TOCCheck`:
        /// "verified", or "mismatch: served from the whole layer verified by its digest (...)").
        public var tocDigest: String?

        public init(
            name: String, digest: String? = nil, targets: [String]? = nil, layers: [String]? = nil,
            reason: String? = nil, signedBy: [String]? = nil, load: ImageSet.Status? = nil, tocDigest: String? = nil
        ) {
            self.name = name
            self.digest = digest
            self.targets = targets
            self.layers = layers
            self.reason = reason
            self.signedBy = signedBy
            self.state = load?.phase
            self.failures = load?.failures
            self.error = load?.lastError
            self.nextRetry = load?.nextRetry
            self.precedence = load?.precedence
            self.tocDigest = tocDigest
        }
    }

    /// One writable upper (a uid's, or `shared`).
    public struct Upper: Codable, Sendable, Equatable {
        public var name: String
        public var bytes: Int64
        public var files: Int

        public init(name: String, bytes: Int64, files: Int) {
            self.name = name
            self.bytes = bytes
            self.files = files
        }
    }

    /// The node-service part: cache bound, lease, mirror, FUSE errors.
    public struct Service: Codable, Sendable, Equatable {
        public var offline: Bool
        public var mirror: String?
        public var mirrorFallbacks: Int
        public var metricsListen: String?
        public var cacheDir: String
        public var cacheMaxSize: Int64?
        public var cacheSize: Int64?
        public var evictedBlobs: Int
        public var evictedBytes: Int64
        /// The lease file while the mount holds it.
        public var lease: String?
        /// `operation/ERRNO` → error replies.
        public var fuseErrors: [String: Int]
        public var systemdNotify: Bool
        /// Automatic publishing (`--publish-to`), as its owner encoded it (`AutoPublisher.Status`); nil when the
        /// mount does not publish.
        public var publishing: JSONValue?
        /// Live refresh (`--refresh-interval`); nil when the mount's images are fixed at mount.
        public var refresh: Refresh?
        /// Set when the mount refreshes or publishes with no signature policy: what anyone who can push to the
        /// registry can then do, and the fix.
        public var signatureWarning: String? = nil
    }

    public var reference: String
    public var mountpoint: String
    public var consumerRoot: String
    /// What consumers set to find the caches (from the images' kinds and KServe labels); optional: documents of
    /// older daemons lack it.
    public var environment: [String: String]?
    public var pid: Int32
    /// The GPU selection, as `--gpu` resolved.
    public var gpus: String
    /// Whether the used images' layers are loaded (the first lookup below the root loads them).
    public var loaded: Bool
    public var used: [Image]
    public var skipped: [Image]
    /// Kernels shown and hidden and group files relocated, in the directories resolved so far.
    public var tree: ImageTreeBuilder.Report?
    public var fetch: FetchMetrics.Snapshot
    /// nil for a read-only mount.
    public var upperRoot: String?
    /// `perUser` or `shared` (`OverlayFileSystem.Isolation`); nil for a read-only mount.
    public var isolation: String?
    /// Each upper; their sizes as last measured in the background (`UpperSizes`: zero until a measurement).
    public var uppers: [Upper]
    /// When the measurement of `uppers`' sizes started (nil before the first ends), and its age in seconds.
    public var uppersMeasuredAt: Date?
    public var uppersAge: Double?
    /// The measurement stopped at its bound on entries or time: sizes count only part of the uppers.
    public var uppersPartial: Bool?
    /// The writable overlay's live inodes and open files; nil for a read-only mount.
    public var overlay: OverlayFileSystem.Report?
    public var service: Service?

    /// The directory holding what `uid` wrote through the mount; nil for a read-only mount.
    public func upper(of uid: UInt32) -> String? {
        guard let upperRoot else { return nil }
        let mode = isolation.flatMap(OverlayFileSystem.Isolation.init(rawValue:)) ?? .perUser
        return upperRoot + "/" + OverlayFileSystem.upperName(isolation: mode, uid: uid)
    }

    /// What user `viewer` may see: their own upper, nobody else's (whose sizes say what they compile).
    public func seen(by viewer: UInt32) -> MountStatus {
        var status = self
        let own = upper(of: viewer).map { ($0 as NSString).lastPathComponent }
        status.uppers = uppers.filter { $0.name == own }
        return status
    }

    /// Where a mount serves its status: reachable by name, never listed.
    public static func file(in mountpoint: String) -> String {
        mountpoint + "/" + ImageFileSystem.controlName + "/status.json"
    }

    /// Reads a document as the daemon wrote it.
    public static func decode(_ data: Data) throws -> MountStatus {
        try decoder.decode(MountStatus.self, from: data)
    }

    /// The document as the daemon serves it: indented, keys sorted, one trailing newline.
    public func encoded() throws -> Data {
        try Self.encoder.encode(self) + Data("\n".utf8)
    }

    /// The document's one spelling: dates as RFC 3339, keys sorted.
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

extension MountStatus {
    /// What a running mount renders its status from, on every open of the status file.
    public struct Source: Sendable {
        public var reference: String
        public var mountpoint: String
        public var consumerRoot: String
        public var selection: String
        public var catalog: Catalog
        public var metrics: FetchMetrics
        public var fileSystem: ImageFileSystem
        public var upperRoot: String?
        public var isolation: String?
        /// The writable overlay, when there is one.
        public var overlay: OverlayFileSystem?
        /// Node-service state as `viewer` may see it (nil: root or the mount's owner); nil when not wired.
        public var service: (@Sendable (_ viewer: UInt32?) -> Service)?

        public init(
            reference: String, mountpoint: String, consumerRoot: String, selection: String, catalog: Catalog,
            metrics: FetchMetrics, fileSystem: ImageFileSystem, upperRoot: String?, isolation: String?,
            overlay: OverlayFileSystem? = nil, service: (@Sendable (UInt32?) -> Service)? = nil
        ) {
            self.reference = reference
            self.mountpoint = mountpoint
            self.consumerRoot = consumerRoot
            self.selection = selection
            self.catalog = catalog
            self.metrics = metrics
            self.fileSystem = fileSystem
            self.upperRoot = upperRoot
            self.isolation = isolation
            self.overlay = overlay
            self.service = service
        }
    }

    /// The status now, with upper sizes from `sizes` (zero without), the node-service part as `viewer` may see it.
    public init(_ source: Source, sizes: UpperSizes.Measurement? = nil, viewer: UInt32? = nil) {
        reference = source.reference
        mountpoint = source.mountpoint
        consumerRoot = source.consumerRoot
        environment = Dictionary(
            source.catalog.consumerEnvironment(root: source.consumerRoot).map { ($0.name, $0.value) },
            uniquingKeysWith: { first, _ in first })
        pid = getpid()
        gpus = source.selection
        loaded = source.fileSystem.isLoaded
        let loads = source.fileSystem.imageStatus
        used = source.catalog.entries.filter(\.isUsed).map { entry in
            Image(
                name: entry.name, digest: entry.digest?.description, targets: entry.targets?.map(\.description),
                layers: entry.image?.layers.map(\.digest.description), signedBy: entry.signedBy,
                load: loads.first { $0.name == entry.name && $0.digest == entry.digest },
                tocDigest: Self.tocDigest(of: entry.image?.layers ?? [], metrics: source.metrics))
        }
        skipped = source.catalog.skipped.map {
            Image(
                name: $0.name, digest: $0.digest?.description, targets: $0.targets?.map(\.description),
                reason: $0.skipReason)
        }
        tree = source.fileSystem.report
        fetch = source.metrics.snapshot
        service = source.service?(viewer)
        upperRoot = source.upperRoot
        isolation = source.isolation
        uppers = (source.upperRoot.map(UpperSizes.names(in:)) ?? []).map { name in
            sizes?.uppers.first { $0.name == name } ?? Upper(name: name, bytes: 0, files: 0)
        }
        if let sizes, source.upperRoot != nil {
            uppersMeasuredAt = sizes.startedAt
            uppersAge = Date().timeIntervalSince(sizes.startedAt)
            uppersPartial = sizes.partial
        }
        overlay = source.overlay?.report
    }
}

/// Holds a mount's status source once the mount is wired; the filesystem renders through it on every open of
/// the status file (before the wiring is done, the document is `{}`).
public final class MountStatusBoard: Sendable {
    private let source = Mutex<(MountStatus.Source, UpperSizes?)?>(nil)

    public init() {}

    public func set(_ value: MountStatus.Source) {
        source.withLock { $0 = (value, value.upperRoot.map(UpperSizes.init(root:))) }
    }

    /// The catalog a refresh grew: the images used and skipped from now on.
    public func update(catalog: Catalog) { source.withLock { $0?.0.catalog = catalog } }

    /// The document `viewer` may read: everything for nil (root, the mount's owner); for a user, their own upper
    /// only (other users' upper sizes say what they compile).
    public func render(for viewer: UInt32? = nil) -> Data {
        guard let (current, sizes) = source.withLock({ $0 }) else { return Data("{}\n".utf8) }
        let status = MountStatus(current, sizes: sizes?.current(), viewer: viewer)
        return (try? (viewer.map(status.seen(by:)) ?? status).encoded()) ?? Data("{}\n".utf8)
    }
}

extension MountStatus {
    /// What the `toc.digest` annotations of an image's layers are worth: the first mismatch, else "verified" once
    /// every annotated layer is; nil without annotated layers, or before they are indexed.
    static func tocDigest(of layers: [Descriptor], metrics: FetchMetrics) -> String? {
        let checks = layers.map { metrics.tocCheck(of: $0.digest) }.compactMap { $0 }
        if let mismatch = checks.first(where: { $0 != .verified }) { return mismatch.description }
        return checks.isEmpty ? nil : TOCCheck.verified.description
    }
}
