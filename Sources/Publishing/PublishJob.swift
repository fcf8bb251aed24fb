import BlobCache
import Foundation

/// One publish: the complete entries of some uppers that no image of the mount provides and that were not
/// published before, pushed as fleet images (one per GPU target) and recorded. `mcvfs publish` runs one; a
/// daemon's `--publish-to` runs one per interval and a last one at unmount.
public struct PublishJob: Sendable {
    /// The root the group files of published images name (Triton's default cache directory for root, where most
    /// GPU pods keep it): the same kernels then make the same image on every node, whatever its mountpoint.
    /// Mounts relocate group files to their own root anyway.
    public static let canonicalRoot = "/root/.triton/cache"
    /// What published vLLM images record as the root they were captured from: vLLM's default `VLLM_CACHE_ROOT`.
    public static let canonicalVLLMRoot = "/root/.cache/vllm"

    public struct Report: Sendable, Codable, Equatable {
        /// One per image built: pushed, already present, or (dry run) to be pushed.
        public var images: [ImagePublisher.Outcome] = []
        /// Entries of the uppers not taken, and why.
        public var skipped: [UpperHarvest.Skipped] = []
        /// Keys left out because an image of the mount provides them or they were published before.
        public var known = 0

        public init() {}

        public var kernelsPublished: Int { images.filter { $0.state == .pushed }.reduce(0) { $0 + $1.keys.count } }
    }

    public let uppers: [String]
    let ledger: PublishLedger
    let publisher: ImagePublisher
    let limits: PublishLimits

    /// - Parameter uppers: the upper directories to harvest, in precedence order (the first that has a key wins).
    public init(
        uppers: [String], ledger: PublishLedger, publisher: ImagePublisher, limits: PublishLimits = PublishLimits()
    ) {
        self.uppers = uppers
        self.ledger = ledger
        self.publisher = publisher
        self.limits = limits
    }

    /// Harvests, builds and pushes, holding the repository's publish lock.
    /// - Parameter provided: the keys the mount's images provide (never published again).
    public func run(provided: Set<String>) throws -> Report {
        try ledger.withLock {
            var published: [String: String] = [:]
            for upper in uppers {
                for key in ledger.record(of: upper).keys.keys { published[key] = upper }
            }
            var report = Report()
            try publishVLLM(provided: provided, published: published, into: &report)
            let harvest = UpperHarvest(uppers: uppers, limits: limits) { key in
                let known = provided.contains(key) || published[key] != nil
                if known { report.known += 1 }
                return known
            }
            report.skipped += harvest.skipped
            guard !harvest.entries.isEmpty else { return report }

            // The staging directory goes whatever happens after it is made: a failed build or push included.
            let work = try WorkDirectory.make("publish", in: ledger.layout)
            defer { work.remove() }
            let stage = try harvest.stage(into: work.path + "/cache", canonicalRoot: Self.canonicalRoot)
            report.skipped += stage.skipped
            let staged = stage.entries
            guard !staged.isEmpty else { return report }
            report.images = try publisher.publish(cacheDirectory: work.path + "/cache", work: work.url)

            let taken = Set(report.images.flatMap(\.keys))
            for entry in staged where !taken.contains(entry.key) {
                report.skipped.append(
                    UpperHarvest.Skipped(
                        path: entry.upper + "/" + entry.key,
                        reason: "not a Triton kernel entry (no <name>.json naming a target, or not a cache key)"))
            }
            guard !publisher.options.dryRun else { return report }
            let upperOf = Dictionary(staged.map { ($0.key, $0.upper) }, uniquingKeysWith: { first, _ in first })
            for image in report.images {
                let byUpper = Dictionary(grouping: image.keys) { upperOf[$0] ?? "" }
                for (upper, keys) in byUpper.sorted(by: { $0.key < $1.key }) where !upper.isEmpty {
                    try ledger.record(keys, tag: image.tag, from: upper)
                }
            }
            return report
        }
    }
}
