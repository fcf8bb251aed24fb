import Foundation
import OCI

/// What a compaction does, decided from the fleet images the repositories hold: which images of each target to
/// merge into one, and which tags may go. Pure, so every rule is tested without a registry; `Compactor` carries it
/// out.
///
/// The rules:
/// - A target is compacted into the destination when it has kernels there that no compaction of the destination
///   holds yet, or images in another repository (a promotion: the strict recipe's staging repository). A target
///   whose kernels a compaction already holds is left as it is, so running compaction often makes no new images.
/// - A tag goes once a compaction of the destination that holds every one of its kernels was made at least
///   `keepFor` ago: mounts that pinned the tag have had that long to refresh and find each kernel in the
///   compaction, and no removal can lose a kernel. The compactions that do the covering are never removed in the
///   same pass; an older compaction that a newer one covers goes by the same rule.
public enum CompactionPlan {
    /// One fleet image, as compaction sees it.
    public struct Image: Sendable, Hashable {
        public var source: MergeRecord.Source
        public var target: GPUTarget
        /// The `<KEY>/` directories it holds.
        public var keys: Set<String>
        /// Set when the image is itself a compaction.
        public var record: MergeRecord?

        public init(source: MergeRecord.Source, target: GPUTarget, keys: Set<String>, record: MergeRecord? = nil) {
            self.source = source
            self.target = target
            self.keys = keys
            self.record = record
        }

        func isCompaction(in destination: String) -> Bool { record != nil && source.repository == destination }
    }

    /// The images of one target to merge, in merge order (repository, then tag: the first to have a key gives it).
    public struct Merge: Sendable, Hashable {
        public var target: GPUTarget
        public var images: [Image]
    }

    /// A tag that goes now: `coveredBy` holds every kernel it has, and was made at least `keepFor` ago.
    public struct Removal: Sendable, Hashable {
        public var image: Image
        public var coveredBy: Image
    }

    /// A tag that stays for now, and why.
    public struct Kept: Sendable, Hashable {
        public var image: Image
        public var reason: String
    }

    public static func merges(_ images: [Image], destination: String) -> [Merge] {
        Dictionary(grouping: images, by: \.target).compactMap { target, group -> Merge? in
            let newest = newestFirst(group.filter { $0.isCompaction(in: destination) }).first
            let needed: Bool
            if let newest {
                needed = group.contains { $0 != newest && !$0.keys.isSubset(of: newest.keys) }
            } else {
                needed = group.count > 1 || group.contains { $0.source.repository != destination }
            }
            return needed ? Merge(target: target, images: group.sorted { $0.source < $1.source }) : nil
        }.sorted { $0.target.description < $1.target.description }
    }

    public static func removals(
        _ images: [Image], destination: String, now: Date, keepFor: TimeInterval
    ) -> (remove: [Removal], keep: [Kept]) {
        func isDue(_ compaction: Image) -> Bool { now >= compaction.record!.mergedAt.addingTimeInterval(keepFor) }
        var remove: [Removal] = []
        var keep: [Kept] = []
        for group in Dictionary(grouping: images, by: \.target).values {
            // The covering compactions: newest first, each kept unless a kept, due one holds all it has.
            var covering: [Image] = []
            for compaction in newestFirst(group.filter { $0.isCompaction(in: destination) }) {
                if let cover = covering.first(where: { isDue($0) && compaction.keys.isSubset(of: $0.keys) }) {
                    remove.append(Removal(image: compaction, coveredBy: cover))
                } else {
                    covering.append(compaction)
                }
            }
            for image in group where !image.isCompaction(in: destination) {
                let covers = covering.filter { image.keys.isSubset(of: $0.keys) }
                if let cover = covers.first(where: isDue) {
                    remove.append(Removal(image: image, coveredBy: cover))
                } else if let earliest = covers.map({ $0.record!.mergedAt }).min() {
                    let due = MergeRecord.timestamp(earliest.addingTimeInterval(keepFor))
                    keep.append(Kept(image: image, reason: "merged; kept until \(due) (--keep-for)"))
                } else {
                    keep.append(Kept(image: image, reason: "not merged yet"))
                }
            }
        }
        return (remove.sorted { $0.image.source < $1.image.source }, keep.sorted { $0.image.source < $1.image.source })
    }

    static func newestFirst(_ compactions: [Image]) -> [Image] {
        compactions.sorted { ($0.record!.mergedAt, $0.source) > ($1.record!.mergedAt, $1.source) }
    }
}
