import BlobCache
import Dispatch
import Foundation
import ImageFS
import LayerArchive
import OCI
import RemoteLayers
import Synchronization

/// What a mount fetches of eStargz layers ahead of use, as the command line names it.
public typealias PrefetchMode = PrefetchPolicy.Mode

/// The one way a mount or a command gets layers: through the mirror, then the origin (or only from the local
/// cache offline), under a lease.
///
/// **The lease.** Created with the provider, before anything is fetched, naming every layer of the catalog's used
/// images and the file contents of those already indexed, so an eviction (a mount's bound, `cache prune`) that
/// runs while the provider lives leaves all of it alone. After a layer's first use its contents join the lease,
/// they are touched for LRU, and the cache bound is enforced. `release()` (or the end of the process) drops it.
///
/// **The lock.** Every fetch and index runs holding `leases/.lock` shared, which eviction takes exclusively, so no
/// eviction runs between a file blob's ingest and the persisted index that names it (before the index exists, the
/// layer's unit does not know its files). Lock order: `leases/.lock`, then the store's ingest and index locks
/// (taken by the fetcher). The lease file is rewritten under the lock exclusive, so it is never written from
/// inside a fetch.
public final class LeasedLayerProvider: LayerProvider {
    /// Who holds the lease and how layers are read.
    public struct Options: Sendable {
        /// `mount`, `fetch`, `extract`: recorded in the lease for `cache ls`.
        public var command: String
        public var mountpoint: String?
        /// Index eStargz layers from their TOC and fetch files on demand (mounts); otherwise every layer is
        /// downloaded whole (fetch, extract).
        public var lazy: Bool
        /// What a lazy provider fetches of eStargz layers ahead of use (`mount --prefetch`).
        public var prefetch: PrefetchPolicy.Mode

        public init(command: String, mountpoint: String? = nil, lazy: Bool, prefetch: PrefetchPolicy.Mode = .none) {
            self.command = command
            self.mountpoint = mountpoint
            self.lazy = lazy
            self.prefetch = prefetch
        }
    }

    public let catalog: Catalog
    public let lease: HeldLease
    public let metrics: FetchMetrics
    let cache: NodeCache
    let upstream: Upstream
    /// Mirror first when there is one; the last source's errors are the ones callers see.
    let sources: [(name: String, fetcher: LayerFetcher)]
    /// Called after a layer's first use with the number of layers in use so far.
    let onLayerLoaded: @Sendable (Int) -> Void
    /// Layers used so far (their first use did the lease bookkeeping). Never held across I/O.
    private let used = Mutex<Set<Digest>>([])
    private let bookkeeping = DispatchQueue(label: "mcvfs.lease-bookkeeping")
    static let lazyBookkeepingDelay = DispatchTimeInterval.seconds(2)

    /// Takes the lease for `catalog`'s used images, then enforces the cache bound once.
    public init(
        catalog: Catalog, upstream: Upstream, cache: NodeCache, options: Options,
        metrics: FetchMetrics = FetchMetrics(), onLayerLoaded: @escaping @Sendable (Int) -> Void = { _ in }
    ) throws {
        self.catalog = catalog
        self.upstream = upstream
        self.cache = cache
        self.metrics = metrics
        self.onLayerLoaded = onLayerLoaded
        let repository = upstream.reference.repository
        // A background prefetch takes no more than the bound leaves (measured when it starts).
        let prefetch = PrefetchPolicy(mode: options.prefetch) { [cache] in
            cache.maxSize.map { $0 - ((try? cache.store.totalSize()) ?? 0) }
        }
        var sources: [(name: String, fetcher: LayerFetcher)] = []
        if let mirror = upstream.mirror {
            sources.append(
                (
                    "mirror \(mirror.host)",
                    try LayerFetcher(
                        client: mirror.client, repository: repository, store: cache.store, metrics: metrics,
                        lazy: options.lazy, prefetch: prefetch)
                ))
        }
        sources.append(
            (
                upstream.isOffline ? "local cache" : "origin",
                try LayerFetcher(
                    client: upstream.origin, repository: repository, store: cache.store, metrics: metrics,
                    lazy: options.lazy, prefetch: prefetch)
            ))
        self.sources = sources
        var layers: [Digest] = []
        var blobs: [Digest] = []
        for image in catalog.used {
            for layer in image.layers {
                layers.append(layer.digest)
                if let index = cache.indexes.load(layer: layer.digest) { blobs += index.contentDigests }
            }
        }
        lease = try cache.hold(
            Lease(
                command: options.command, mountpoint: options.mountpoint, reference: upstream.reference.description,
                layers: layers, blobs: blobs))
        cache.enforceBound()
    }

    /// Drops the lease: what it named becomes evictable. Nothing may be fetched afterwards.
    public func release() { lease.release() }

    /// Indexes every layer of the used images in catalog order, downloading what is not local; `progress` runs
    /// after each layer. What `fetch` and `extract` do.
    public func indexUsedImages(
        progress: (CacheImage, Descriptor) -> Void = { _, _ in }
    ) throws -> [(image: CacheImage, layers: [LayerIndex])] {
        try catalog.used.map { image in
            let layers = try image.layers.map { layer in
                let index = try index(of: layer, in: image)
                progress(image, layer)
                return index
            }
            return (image, layers)
        }
    }

    // MARK: LayerProvider

    public func index(of layer: Descriptor, in image: CacheImage) throws -> LayerIndex {
        // A whole layer downloads outside `leases/.lock`: the lease names the layer from the start (no eviction
        // takes it), and the lock held across the network would make every other image's bookkeeping (which takes
        // it exclusively) wait for this download. Indexing, which ingests file blobs, stays under it.
        if sources[sources.count - 1].fetcher.downloadsWhole(layer),
            !FileManager.default.fileExists(atPath: cache.indexes.path(for: layer.digest))
        {
            try throughSources(layer) { try $0.download(layer) }
        }
        let index = try cache.withoutEviction {
            try throughSources(layer) { try $0.index(of: layer) }
        }
        if used.withLock({ $0.insert(layer.digest).inserted }) {
            let firstUse: @Sendable () -> Void = { [self] in
                let contents = index.contentDigests
                try? lease.add(layers: [layer.digest], blobs: Array(contents))
                for digest in contents.union([layer.digest]) where cache.store.contains(digest) {
                    try? cache.store.touch(digest)  // lazily indexed layers name contents not fetched yet
                }
                cache.enforceBound()
                onLayerLoaded(used.withLock { $0.count })
            }
            // A layer indexed from its TOC names thousands of contents, nearly all still remote: leasing them and
            // touching the local ones waits until the first kernels are served (the lease write holds the lock
            // every fetch takes). Should an eviction take a local one meanwhile, it is fetched and verified again
            // when read, never served wrong.
            if index.remote != nil {
                bookkeeping.asyncAfter(deadline: .now() + Self.lazyBookkeepingDelay, execute: firstUse)
            } else {
                firstUse()
                // A layer unpacked while it downloaded is served before its blob and pack are committed: the
                // bound is enforced again once they count in the cache.
                if index.pack != nil {
                    bookkeeping.async { [sources, cache] in
                        for (_, fetcher) in sources { fetcher.waitForCommits() }
                        cache.enforceBound()
                    }
                }
            }
        }
        return index
    }

    /// `body` with the mirror's fetcher, then the origin's when the mirror fails.
    @discardableResult
    private func throughSources<R>(_ layer: Descriptor, _ body: (LayerFetcher) throws -> R) throws -> R {
        for (name, fetcher) in sources.dropLast() {
            do { return try body(fetcher) } catch {
                upstream.mirrorFailed("on layer \(layer.digest.short) (\(name))", error)
            }
        }
        return try body(sources[sources.count - 1].fetcher)
    }

    /// A local blob is answered from the store at once: no lock, no fetch. Otherwise under `leases/.lock` shared
    /// (as indexing is): the lease already names the content, so no eviction can take it between its ingest
    /// and its first read.
    public func bytes(of content: Digest) throws -> FileBytes {
        if let path = cache.store.path(for: content) { return .stored(path: path) }
        return try firstSource(of: content) { try $0.fetch(content) }
    }

    /// Tries each source in turn; a source whose indexes do not name `content` is skipped silently.
    private func firstSource<R>(of content: Digest, _ body: (LayerFetcher) throws -> R) throws -> R {
        try cache.withoutEviction {
            var lastError: (any Error)?
            for (i, (name, fetcher)) in sources.enumerated() {
                do { return try body(fetcher) } catch LayerFetcher.FetchError.unknownContent {
                    continue
                } catch {
                    if i < sources.count - 1 { upstream.mirrorFailed("on file \(content.short) (\(name))", error) }
                    lastError = error
                }
            }
            throw lastError ?? LayerFetcher.FetchError.unknownContent(content)
        }
    }

    public func persistPrefetched() {
        try? cache.withoutEviction {
            for (_, fetcher) in sources { fetcher.persistPrefetched() }
        }
    }

    public func prefetch(_ contents: [Digest]) {
        try? cache.withoutEviction {
            for (_, fetcher) in sources { fetcher.prefetch(contents) }
        }
    }
}
