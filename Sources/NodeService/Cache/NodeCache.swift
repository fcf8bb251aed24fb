import BlobCache
import Foundation
import LayerArchive
import Synchronization

/// The cache directory as a node uses it: the store, the layer indexes and the leases, and the size bound a
/// mount keeps (`--cache-max-size`). Opening it removes the leases of processes that died.
public final class NodeCache: Sendable {
    /// What this process evicted to keep the bound.
    public struct Evictions: Sendable, Equatable {
        public var blobs = 0
        public var bytes: Int64 = 0
    }

    public let layout: CacheLayout
    public let store: DirectoryBlobStore
    public let janitor: CacheJanitor
    /// nil: unbounded.
    public let maxSize: Int64?
    let log: NodeLog
    private let evicted = Mutex(Evictions())

    /// Opens (creating when missing) the cache directory of `layout`.
    public init(layout: CacheLayout, maxSize: Int64? = nil, log: NodeLog = .silent) throws {
        self.layout = layout
        self.store = try DirectoryBlobStore(layout: layout)
        self.janitor = try CacheJanitor(store: store)
        self.maxSize = maxSize
        self.log = log
        for name in janitor.removeStaleLeases() { log.info("removed the stale lease \(name) of a process that died") }
    }

    public var evictions: Evictions { evicted.withLock { $0 } }

    /// The layer indexes kept in the cache directory.
    public var indexes: LayerIndexCache { janitor.indexes }

    /// Records `lease` (under `leases/.lock`): from now on no eviction takes what it names.
    public func hold(_ lease: Lease) throws -> HeldLease { try janitor.leases.acquire(lease) }

    /// Runs `body` holding `leases/.lock` shared, as every fetch and index does: eviction, which takes it
    /// exclusively, waits until it ends, so nothing `body` ingests goes before a lease names it.
    public func withoutEviction<R>(_ body: () throws -> R) throws -> R {
        try janitor.leases.withLock(exclusive: false, body)
    }

    /// Evicts least recently used units no lease holds until the cache fits `maxSize`, if set. Failures are
    /// logged: a cache over its bound still serves. Must not be called while holding `leases/.lock`.
    public func enforceBound() {
        guard let maxSize else { return }
        do {
            let plan = try janitor.enforce(maxSize: maxSize)
            let freed = plan.sizeBefore - plan.sizeAfter
            evicted.withLock {
                $0.blobs += plan.removeBlobs.count
                $0.bytes += freed
            }
            if !plan.removeBlobs.isEmpty || !plan.removeIndexes.isEmpty {
                log.info(
                    "cache: evicted \(plan.removeIndexes.count) layer(s), \(plan.removeBlobs.count) blob(s), "
                        + "\(ByteSize.format(freed)); \(ByteSize.format(plan.sizeAfter)) left")
            }
            if plan.overBound {
                log.warning(
                    "cache: \(ByteSize.format(plan.sizeAfter)) in use by running mounts exceeds --cache-max-size "
                        + ByteSize.format(maxSize))
            }
        } catch {
            log.warning("cache: eviction failed: \(error)")
        }
    }
}
