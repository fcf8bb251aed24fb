import Foundation
import OCI

/// What a compaction does, decided from the fleet images the repositories hold: which images of each target to
/// merge into one, and which tags may go. Pure, so every rule is tested without a registry; `Compactor` carries it
/// out.
///
/// The rules:
/// - Images are grouped by kind and target: the Triton images of a target merge into one image, the vLLM images of a
///   target (one per vLLM hash, `publish`) into another, whose KEYs are the vLLM hash directories (docs/vllm.md).
/// - A target is compacted into the destination when an image the newest compaction of the destination did not
///   merge has kernels that it lacks, or when the target has images in another repository (a promotion: the strict
///   recipe's staging repository). A target whose kernels a compaction already holds is left as it is, so running
///   compaction often makes no new images; so is one whose only missing kernels are KEYs that compaction left out
///   (its sources disagreed on them) until an image it did not merge arrives.
/// - The merge order (`batches`): a KEY comes from the first batch that has it, and is left out where the images of
///   that batch hold different bytes for it (`Precedence`, `KeyOwnership` in ImageFS). The earlier compactions
///   this compaction's signer made come first, oldest first, each a batch of its own: consumers already serve
///   their bytes. Every other image is one batch: the fleet images of nodes are peers, and nothing orders them
///   that their publishers could not choose (a tag, a digest ground by re-pushing).
/// - A tag goes once a compaction of the destination that holds every one of its kernels was made at least
///   `keepFor` ago: mounts that pinned the tag have had that long to refresh and find each kernel in the
///   compaction, and no removal can lose a kernel. The compactions that do the covering are never removed in the
///   same pass; an older compaction that a newer one covers goes by the same rule.
public enum CompactionPlan {
    /// One fleet image, as compaction sees it.
    public struct Image: Sendable, Hashable {
        public var source: MergeRecord.Source
        public var target: GPUTarget
        /// The cache it holds: Triton kernels, or vLLM hash directories.
        public var kind: CacheLabels.Kind
        /// The KEYs it holds: Triton's `<KEY>/` directories, or vLLM's hash directories.
        public var keys: Set<String>
        /// Set when the image is itself a compaction.
        public var record: MergeRecord?

        public init(
            source: MergeRecord.Source, target: GPUTarget, kind: CacheLabels.Kind = .triton, keys: Set<String>,
            record: MergeRecord? = nil
        ) {
            self.source = source
            self.target = target
            self.kind = kind
            self.keys = keys
            self.record = record
        }

        /// The images that merge together: those of one kind and target.
        var group: Group { Group(kind: kind, target: target) }

        func isCompaction(in destination: String) -> Bool { record != nil && source.repository == destination }

        /// A compaction of `destination` that `trusted` holds (nil: every image with a record label): one that may
        /// cover other tags or stand for what was merged. A record label alone is something any publisher can write.
        func isTrustedCompaction(in destination: String, _ trusted: Set<MergeRecord.Source>?) -> Bool {
            isCompaction(in: destination) && (trusted?.contains(source) ?? true)
        }
    }

    /// What merges into one image: a kind of cache for one target.
    public struct Group: Sendable, Hashable {
        public var kind: CacheLabels.Kind
        public var target: GPUTarget
    }

    /// The images of one kind and target to merge (by repository, then tag; `batches` says how they rank).
    public struct Merge: Sendable, Hashable {
        public var target: GPUTarget
        public var kind: CacheLabels.Kind
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

    /// - Parameter trusted: the compactions that count as such (`isTrustedCompaction`); nil: every labelled one.
    public static func merges(
        _ images: [Image], destination: String, trusted: Set<MergeRecord.Source>? = nil
    ) -> [Merge] {
        Dictionary(grouping: images, by: \.group).compactMap { key, group -> Merge? in
            let newest = newestFirst(group.filter { $0.isTrustedCompaction(in: destination, trusted) }).first
            let needed: Bool
            if let newest {
                let merged = Set(newest.record!.sources)
                needed = group.contains {
                    $0 != newest && !merged.contains($0.source) && !$0.keys.isSubset(of: newest.keys)
                }
            } else {
                needed = group.count > 1 || group.contains { $0.source.repository != destination }
            }
            return needed
                ? Merge(target: key.target, kind: key.kind, images: group.sorted { $0.source < $1.source }) : nil
        }.sorted { ($0.target.description, $0.kind.rawValue) < ($1.target.description, $1.kind.rawValue) }
    }

    /// Each image's batch in the merged tree (the rule above): 0 ..< n for the n earlier compactions of
    /// `destination` that `ownCompactions` holds (those that carry this compaction's signature: a record label
    /// alone is something any publisher can write), oldest first; n for every other image.
    public static func batches(
        of merge: Merge, destination: String, ownCompactions: Set<MergeRecord.Source>
    ) -> [MergeRecord.Source: Int] {
        let earlier = newestFirst(
            merge.images.filter { $0.isCompaction(in: destination) && ownCompactions.contains($0.source) }
        ).reversed().map(\.source)
        var batches = Dictionary(uniqueKeysWithValues: earlier.enumerated().map { ($1, $0) })
        for image in merge.images where batches[image.source] == nil { batches[image.source] = earlier.count }
        return batches
    }

    /// - Parameter trusted: the compactions that may cover a tag (`isTrustedCompaction`); nil: every labelled one.
    public static func removals(
        _ images: [Image], destination: String, now: Date, keepFor: TimeInterval,
        trusted: Set<MergeRecord.Source>? = nil
    ) -> (remove: [Removal], keep: [Kept]) {
        func isDue(_ compaction: Image) -> Bool { now >= compaction.record!.mergedAt.addingTimeInterval(keepFor) }
        var remove: [Removal] = []
        var keep: [Kept] = []
        for group in Dictionary(grouping: images, by: \.group).values {
            // The covering compactions: newest first, each kept unless a kept, due one holds all it has.
            var covering: [Image] = []
            for compaction in newestFirst(group.filter { $0.isTrustedCompaction(in: destination, trusted) }) {
                if let cover = covering.first(where: { isDue($0) && compaction.keys.isSubset(of: $0.keys) }) {
                    remove.append(Removal(image: compaction, coveredBy: cover))
                } else {
                    covering.append(compaction)
                }
            }
            for image in group where !image.isTrustedCompaction(in: destination, trusted) {
                let covers = covering.filter { image.keys.isSubset(of: $0.keys) }
                if let cover = covers.first(where: isDue) {
                    remove.append(Removal(image: image, coveredBy: cover))
                } else if let earliest = covers.map({ $0.record!.mergedAt }).min() {
                    let due = MergeRecord.timestamp(earliest.addingTimeInterval(keepFor))
                    keep.append(Kept(image: image, reason: "merged; kept until \(due) (--keep-for)"))
                } else if let merging = covering.first(where: { $0.record!.sources.contains(image.source) }) {
                    let left = image.keys.subtracting(merging.keys).sorted()
                    keep.append(
                        Kept(
                            image: image,
                            reason:
                                "merged into \(merging.source.tag), which left out KEY(s) \(left.joined(separator: ", ")): "
                                + "images of one rank hold different bytes for them (compact's conflicts)"))
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
