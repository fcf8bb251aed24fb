import BlobCache
import Foundation
import OCI

/// Which cache contents to delete to get under a size bound: a pure function of what the cache holds, so it is
/// tested without files (the shape of a state machine returning actions, as the style guide asks).
///
/// **Units.** A layer is stored as its blob (the compressed tar), its index (`index/sha256/<layer>.json`, small,
/// not counted), and its files: one file blob per distinct content the index names, or the layer's pack (all its
/// files in one file, for a layer unpacked whole). A mount reads only the index and the files; the layer blob is needed again only to rebuild them. Evicting part of that set
/// buys nothing but a re-download, so a layer is evicted as one unit: index, layer blob, and every file blob no
/// surviving unit also names (identical files are shared between layers and stay while any user remains).
/// Blobs that no index names (image configs, a layer downloaded but never indexed) are units of their own.
///
/// **Order.** Units a live mount holds (its lease names the layer, or the blob itself) are never candidates.
/// The others go least recently used first: a unit's last use is the newest access time of its members.
/// Eviction stops as soon as the total fits; when the live units alone exceed the bound, everything else goes
/// and `Plan.overBound` says so.
///
/// **Crash safety** (applied by `CacheJanitor`): indexes are deleted before any blob, so a crash midway leaves
/// at worst blobs without an index (plain units, evicted or reused later), never an index whose files are gone.
public enum EvictionPolicy {
    /// A committed blob as the store lists it.
    public typealias Blob = BlobInfo

    public struct Input: Sendable {
        /// Every committed blob.
        public var blobs: [Blob]
        /// Every persisted layer index: layer digest → the file-content digests it names.
        public var indexes: [Digest: Set<Digest>]
        /// Digests named by live leases (layers, configs, file contents).
        public var live: Set<Digest>
        /// The bound in bytes of committed blobs; 0 evicts every unit not live.
        public var maxSize: Int64

        public init(blobs: [Blob], indexes: [Digest: Set<Digest>], live: Set<Digest>, maxSize: Int64) {
            self.blobs = blobs
            self.indexes = indexes
            self.live = live
            self.maxSize = maxSize
        }
    }

    public struct Plan: Sendable, Equatable {
        /// Layer indexes to delete, first.
        public var removeIndexes: [Digest] = []
        /// Blobs to delete after the indexes.
        public var removeBlobs: [Digest] = []
        public var sizeBefore: Int64 = 0
        public var sizeAfter: Int64 = 0
        /// True when the bound cannot be met without touching live units.
        public var overBound = false
    }

    public static func plan(_ input: Input) -> Plan {
        let byDigest = Dictionary(input.blobs.map { ($0.digest, $0) }, uniquingKeysWith: { first, _ in first })
        let total = input.blobs.reduce(0) { $0 + $1.size }
        var plan = Plan(sizeBefore: total, sizeAfter: total)
        guard total > input.maxSize else { return plan }

        struct Unit {
            var layer: Digest?
            var members: Set<Digest>
            var lastAccess: Date
            var key: Digest
        }
        var units: [Unit] = []
        var indexed = Set<Digest>()
        for (layer, contents) in input.indexes {
            let members = contents.union([layer])
            indexed.formUnion(members)
            let newest = members.compactMap { byDigest[$0]?.lastAccess }.max() ?? .distantPast
            units.append(Unit(layer: layer, members: members, lastAccess: newest, key: layer))
        }
        for blob in input.blobs where !indexed.contains(blob.digest) {
            units.append(Unit(layer: nil, members: [blob.digest], lastAccess: blob.lastAccess, key: blob.digest))
        }
        let candidates = units.filter { !input.live.contains($0.key) }
            .sorted { ($0.lastAccess, $0.key) < ($1.lastAccess, $1.key) }
        let surviving = units.filter { input.live.contains($0.key) }
        // Digests some kept unit still needs; shrinks as units are evicted.
        var needed: [Digest: Int] = [:]
        for unit in units { for member in unit.members { needed[member, default: 0] += 1 } }
        var protected = input.live
        for unit in surviving { protected.formUnion(unit.members) }

        var removed = Set<Digest>()
        var size = total
        for unit in candidates {
            guard size > input.maxSize else { break }
            if let layer = unit.layer { plan.removeIndexes.append(layer) }
            for member in unit.members {
                needed[member, default: 1] -= 1
                guard needed[member] == 0, !protected.contains(member), let blob = byDigest[member],
                    removed.insert(member).inserted
                else { continue }
                size -= blob.size
            }
        }
        plan.removeIndexes.sort()
        plan.removeBlobs = removed.sorted()
        plan.sizeAfter = size
        plan.overBound = size > input.maxSize
        return plan
    }
}
