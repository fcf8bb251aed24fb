import BlobCache
import Foundation
import LayerArchive
import OCI

/// Applies `EvictionPolicy` to a cache directory: gathers blobs, indexes and live leases, plans, deletes.
/// Everything happens under `leases/.lock` (exclusive), so no mount can register a lease, or build an index
/// (builders hold the lock shared, see `LeaseDirectory`), between the plan and the deletions.
public struct CacheJanitor: Sendable {
    public let store: DirectoryBlobStore
    public let indexes: LayerIndexCache
    public let leases: LeaseDirectory

    public init(store: DirectoryBlobStore) throws {
        self.store = store
        self.indexes = try LayerIndexCache(store: store)
        self.leases = try LeaseDirectory(layout: store.layout)
    }

    /// What the cache holds, for `mcvfs cache ls` and the policy.
    public struct Inventory: Sendable {
        public var blobs: [BlobInfo]
        public var indexes: [Digest: Set<Digest>]
        public var leases: [Lease]

        public var live: Set<Digest> { leases.reduce(into: Set()) { $0.formUnion($1.digests) } }

        /// Digests of live units: leased layers with their indexed contents, plus leased blobs.
        public var protected: Set<Digest> {
            var result = live
            for (layer, contents) in indexes where result.contains(layer) { result.formUnion(contents) }
            return result
        }

        public var totalSize: Int64 { blobs.reduce(0) { $0 + $1.size } }

        /// What each blob is to the cache: how `cache ls` classifies it.
        public enum Kind: String, Sendable, Codable {
            /// A layer blob: indexed, or named by a lease (being indexed).
            case layer
            /// A file content an index names.
            case file
            /// Anything else: configs, layers downloaded but never indexed.
            case blob
        }

        /// The kind of every blob.
        public var kinds: [Digest: Kind] {
            let files = indexes.values.reduce(into: Set<Digest>()) { $0.formUnion($1) }
            let leasedLayers = Set(leases.flatMap(\.layers))
            var kinds: [Digest: Kind] = [:]
            for blob in blobs {
                let digest = blob.digest
                kinds[digest] =
                    indexes[digest] != nil || leasedLayers.contains(digest)
                    ? .layer : files.contains(digest) ? .file : .blob
            }
            return kinds
        }
    }

    /// Reads the cache; call under `leases.withLock` for a view consistent with deletions.
    public func inventory() throws -> Inventory {
        var indexMap: [Digest: Set<Digest>] = [:]
        for layer in indexes.persistedLayers() {
            guard let index = indexes.load(layer: layer) else { continue }
            indexMap[layer] = index.contentDigests
        }
        return Inventory(blobs: try store.list(), indexes: indexMap, leases: leases.live())
    }

    /// Deletes least recently used units not leased until blobs total at most `maxSize` (0: all unleased).
    @discardableResult
    public func enforce(maxSize: Int64) throws -> EvictionPolicy.Plan {
        try leases.withLock {
            let inventory = try inventory()
            let plan = EvictionPolicy.plan(
                EvictionPolicy.Input(
                    blobs: inventory.blobs,
                    indexes: inventory.indexes, live: inventory.live, maxSize: maxSize))
            // Indexes first: a crash after this leaves blobs without an index, never an index without its files.
            for layer in plan.removeIndexes { indexes.remove(layer: layer) }
            for digest in plan.removeBlobs { try store.remove(digest) }
            return plan
        }
    }

    /// Crash leftovers the store and index cache do not clean at open: leases of dead mounts.
    @discardableResult
    public func removeStaleLeases() -> [String] { leases.removeStale() }
}
