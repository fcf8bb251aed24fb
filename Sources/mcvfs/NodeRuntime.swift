import BlobCache
import CacheRepository
import Foundation
import GPU
import ImageFS
import NodeService
import OCI
import Registry
import Synchronization
import TarIndex

/// What `mount` does as a node service, kept out of `MountCommand`: offline and mirrored catalog resolution,
/// the cache lease and bound, metrics, and systemd notifications. One per mount process.
final class NodeRuntime: Sendable {
    let reference: ImageReference
    let mountpoint: String
    let cacheRoot: URL
    let store: DirectoryBlobStore
    let janitor: CacheJanitor
    let offline: Bool
    let mirror: String?
    let maxSize: Int64?
    let notifier = SystemdNotifier()
    let fuseErrors = FUSEErrorCounter()
    let metricsServer: MetricsServer?
    /// nil when offline.
    let origin: RegistryClient?
    let mirrorClient: RegistryClient?
    private let state = Mutex(State())

    struct State {
        var lease: HeldLease?
        var catalog: Catalog?
        var metrics: FetchMetrics?
        var evictedBlobs = 0
        var evictedBytes: Int64 = 0
        var mirrorFallbacks = 0
        var layersLoaded = 0
    }

    init(
        options: ServiceOptions, global: GlobalOptions, reference: ImageReference, mountpoint: String,
        store: DirectoryBlobStore
    ) throws {
        self.reference = reference
        self.mountpoint = mountpoint
        self.store = store
        self.cacheRoot = store.root
        self.janitor = try CacheJanitor(store: store)
        self.offline = options.offline
        self.mirror = options.mirror
        self.maxSize = options.maxSize
        for name in janitor.removeStaleLeases() { Log.info("removed the stale lease \(name) of a mount that died") }
        origin = options.offline ? nil : try global.client(for: reference, attempts: 2)
        mirrorClient = try options.mirror.map {
            try global.client(
                for: ImageReference(
                    registry: $0, repository: reference.repository, tag: reference.tag, digest: reference.digest),
                attempts: 1)
        }
        // Bound now, so a taken port fails the mount before it is announced.
        let box = MetricsRenderBox()
        metricsServer = try options.metricsListen.map {
            try MetricsServer(address: try MetricsServer.Address(parsing: $0)) { box.render() }
        }
        box.runtime.withLock { $0 = self }
    }

    // MARK: Catalog

    /// Resolves the reference: from the recorded catalog when offline; through the mirror first when there is
    /// one; else from the origin, falling back to the recorded catalog when the registry is unreachable.
    func catalog(selection: ResolvedSelection) throws -> Catalog {
        let records = CatalogRecord(root: cacheRoot)
        let key = selection.description
        if offline {
            guard let recorded = records.load(reference: reference.description, selection: key) else {
                throw NodeError(
                    "offline: no recorded catalog for \(reference) with GPUs \(key); mount or `mcvfs fetch` it once "
                        + "online with the same --gpu selection")
            }
            Log.info("offline: serving the digests recorded for \(reference)")
            return remember(recorded)
        }
        if let mirrorClient, let mirror {
            do {
                var catalog = try ImageResolver(client: mirrorClient, store: store)
                    .catalog(
                        for: mirrorClientReference(mirror), accepts: selection.accepts,
                        selectionDescription: key)
                catalog.reference = reference.description
                catalog.repository = reference.repositoryName
                try? records.save(catalog, selection: key)
                Log.info("resolved \(reference) through the mirror \(mirror)")
                return remember(catalog)
            } catch {
                noteMirrorFallback("resolving \(reference)", error)
            }
        }
        guard let origin else { throw NodeError("no registry client") }
        do {
            let catalog = try ImageResolver(client: origin, store: store)
                .catalog(for: reference, accepts: selection.accepts, selectionDescription: key)
            try? records.save(catalog, selection: key)
            return remember(catalog)
        } catch let error as RegistryError where error.isTransient {
            guard let recorded = records.load(reference: reference.description, selection: key) else { throw error }
            Log.warning("registry unreachable (\(error)); serving the digests pinned at the last mount of \(reference)")
            return remember(recorded)
        }
    }

    private func mirrorClientReference(_ host: String) -> ImageReference {
        ImageReference(registry: host, repository: reference.repository, tag: reference.tag, digest: reference.digest)
    }

    /// Keeps the catalog the mount serves, for metrics.
    @discardableResult
    func remember(_ catalog: Catalog) -> Catalog {
        state.withLock { $0.catalog = catalog }
        return catalog
    }

    func noteMirrorFallback(_ what: String, _ error: any Error) {
        state.withLock { $0.mirrorFallbacks += 1 }
        Log.warning(
            "mirror \(mirror ?? "?") failed \(what) (\(error)); falling back to the origin \(reference.registry)")
    }

    // MARK: Layers, lease, bound

    /// The layer provider for the filesystem. Registers this mount's lease first (so no eviction can take what
    /// it is about to use), then enforces the cache bound once.
    func provider(catalog: Catalog, metrics: FetchMetrics) throws -> any LayerProvider {
        state.withLock { $0.metrics = metrics }
        var fetchers: [(String, LayerFetcher)] = []
        if let mirrorClient, let mirror {
            fetchers.append(
                (
                    "mirror \(mirror)",
                    try LayerFetcher(
                        client: mirrorClient, repository: reference.repository, store: store, metrics: metrics,
                        lazy: true)
                ))
        }
        fetchers.append(
            (
                offline ? "local cache" : "origin",
                try LayerFetcher(
                    client: origin, repository: reference.repository, store: store, metrics: metrics, lazy: true)
            ))
        var layers: [Digest] = []
        var blobs: [Digest] = []
        for entry in catalog.entries where entry.isUsed {
            for layer in entry.image?.layers ?? [] {
                layers.append(layer.digest)
                if let index = janitor.indexes.load(layer: layer.digest) { blobs += index.contentDigests }
            }
        }
        let lease = try janitor.leases.acquire(
            Lease(mountpoint: mountpoint, reference: reference.description, layers: layers, blobs: blobs))
        state.withLock { $0.lease = lease }
        enforceBound()
        return ServiceLayerProvider(runtime: self, fetchers: fetchers, lease: lease)
    }

    /// Evicts down to `--cache-max-size`, if set. Must not be called while holding `leases/.lock`.
    func enforceBound() {
        guard let maxSize else { return }
        do {
            let plan = try janitor.enforce(maxSize: maxSize)
            let freed = plan.sizeBefore - plan.sizeAfter
            state.withLock {
                $0.evictedBlobs += plan.removeBlobs.count
                $0.evictedBytes += freed
            }
            if !plan.removeBlobs.isEmpty || !plan.removeIndexes.isEmpty {
                Log.info(
                    "cache: evicted \(plan.removeIndexes.count) layer(s), \(plan.removeBlobs.count) blob(s), "
                        + "\(formatBytes(freed)); \(formatBytes(plan.sizeAfter)) left")
            }
            if plan.overBound {
                Log.warning(
                    "cache: \(formatBytes(plan.sizeAfter)) in use by running mounts exceeds --cache-max-size "
                        + formatBytes(maxSize))
            }
        } catch {
            Log.warning("cache: eviction failed: \(error)")
        }
    }

    // MARK: Lifecycle

    /// The mount serves: start metrics and tell systemd. A replacement (`--replace`, run by `systemctl reload`)
    /// first names itself the service's main process: the daemon it replaces is about to exit.
    func serving(_ message: String, replacing: Bool = false) {
        metricsServer?.start()
        if let metricsServer { Log.info("metrics at http://\(metricsServer.address)/metrics") }
        do {
            if replacing { try notifier.send(["MAINPID=\(getpid())"]) }
            try notifier.ready(status: message)
        } catch { Log.warning("sd_notify READY: \(error)") }
    }

    /// Refreshes the `STATUS=` line `systemctl status` shows, after a layer comes into use.
    func layerLoaded() {
        guard notifier.isEnabled else { return }
        let (loaded, metrics) = state.withLock { current -> (Int, FetchMetrics?) in
            current.layersLoaded += 1
            return (current.layersLoaded, current.metrics)
        }
        let fetched = formatBytes(metrics?.snapshot.bytesFetched ?? 0)
        try? notifier.status("serving \(reference) at \(mountpoint); \(loaded) layer(s) in use, \(fetched) fetched")
    }

    /// The FUSE loop ended (unmount or signal); the mount is about to go.
    func stopping() {
        do { try notifier.stopping(status: "unmounting \(mountpoint)") } catch {
            Log.warning("sd_notify STOPPING: \(error)")
        }
    }

    /// The mount is gone: drop the lease so its layers become evictable.
    func finished() {
        state.withLock {
            $0.lease?.release()
            $0.lease = nil
        }
    }

    // MARK: Observability

    var status: @Sendable () -> ServiceStatus {
        { [self] in
            let current = state.withLock { $0 }
            return ServiceStatus(
                offline: offline, mirror: mirror, mirrorFallbacks: current.mirrorFallbacks,
                metricsListen: metricsServer.map { "\($0.address)" }, cacheDir: cacheRoot.path, cacheMaxSize: maxSize,
                cacheSize: try? store.totalSize(), evictedBlobs: current.evictedBlobs,
                evictedBytes: current.evictedBytes, lease: current.lease?.file, fuseErrors: fuseErrors.summary,
                systemdNotify: notifier.isEnabled)
        }
    }

    func metricFamilies() -> [MetricFamily] {
        let current = state.withLock { $0 }
        let fetch = current.metrics?.snapshot ?? FetchMetrics.Snapshot()
        var families: [MetricFamily] = []
        func counter(_ name: String, _ help: String, _ value: Double) {
            families.append(.single(name, help: help, kind: .counter, value: value))
        }
        func gauge(_ name: String, _ help: String, _ value: Double) {
            families.append(.single(name, help: help, kind: .gauge, value: value))
        }
        families.append(
            .histogram(
                "mcvfs_layer_fetch_seconds", help: "Time to download one layer blob from a registry.",
                bounds: FetchMetrics.LatencyHistogram.bounds, counts: fetch.fetchSeconds.counts,
                sum: fetch.fetchSeconds.sum))
        counter("mcvfs_fetched_bytes_total", "Bytes of layer blobs downloaded.", Double(fetch.bytesFetched))
        counter("mcvfs_fetched_blobs_total", "Layer blobs downloaded.", Double(fetch.blobsFetched))
        counter(
            "mcvfs_range_requests_total", "Range requests of eStargz layers (footer, TOC, file members).",
            Double(fetch.rangeRequests))
        counter(
            "mcvfs_layer_cache_hits_total", "Layer lookups served from the local index cache.",
            Double(fetch.layerCacheHits))
        counter(
            "mcvfs_layer_cache_misses_total", "Layer lookups that needed a download and indexing.",
            Double(fetch.layerCacheMisses))
        counter(
            "mcvfs_verification_failures_total", "Blobs or layers rejected by digest or content checks.",
            Double(fetch.verificationFailures))
        counter(
            "mcvfs_registry_errors_total", "Layer fetches that failed for another reason (network, registry).",
            Double(fetch.fetchErrors))
        counter(
            "mcvfs_mirror_fallbacks_total", "Reads the mirror failed and the origin served.",
            Double(current.mirrorFallbacks))
        counter(
            "mcvfs_evicted_bytes_total", "Bytes this mount evicted to keep the cache bound.",
            Double(current.evictedBytes))
        let errors = fuseErrors.snapshot.sorted { ($0.key.operation, $0.key.errno) < ($1.key.operation, $1.key.errno) }
        var errorSamples: [MetricFamily.Sample] = []
        for (key, count) in errors {
            let labels: [(name: String, value: String)] = [
                ("op", key.operation), ("errno", FUSEErrorCounter.name(of: key.errno)),
            ]
            errorSamples.append(MetricFamily.Sample(labels: labels, value: Double(count)))
        }
        families.append(
            MetricFamily(
                name: "mcvfs_fuse_errors_total", help: "FUSE requests answered with an error, by operation and errno.",
                kind: .counter, samples: errorSamples))
        let used = Double(current.catalog?.used.count ?? 0)
        let skipped = Double(current.catalog?.skipped.count ?? 0)
        families.append(
            MetricFamily(
                name: "mcvfs_images", help: "Images of the reference, by whether this mount uses them.", kind: .gauge,
                samples: [
                    MetricFamily.Sample(labels: [("state", "used")], value: used),
                    MetricFamily.Sample(labels: [("state", "skipped")], value: skipped),
                ]))
        if let size = try? store.totalSize() {
            gauge("mcvfs_cache_bytes", "Bytes of committed blobs in the cache directory.", Double(size))
        }
        if let maxSize { gauge("mcvfs_cache_max_bytes", "The --cache-max-size bound.", Double(maxSize)) }
        return families
    }
}

/// Lets the metrics server, created in `NodeRuntime.init`, render through the runtime once it exists.
private final class MetricsRenderBox: Sendable {
    let runtime = Mutex<NodeRuntime?>(nil)
    func render() -> String {
        PrometheusText.render(runtime.withLock { $0 }?.metricFamilies() ?? [])
    }
}

struct NodeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The node-service part of `/.mcvfs/status.json`.
struct ServiceStatus: Encodable, Sendable {
    var offline: Bool
    var mirror: String?
    var mirrorFallbacks: Int
    var metricsListen: String?
    var cacheDir: String
    var cacheMaxSize: Int64?
    var cacheSize: Int64?
    var evictedBlobs: Int
    var evictedBytes: Int64
    var lease: String?
    /// `operation/ERRNO` → error replies.
    var fuseErrors: [String: Int]
    var systemdNotify: Bool
}

/// Serves layers for the filesystem through the mirror, then the origin, (or only the local cache offline),
/// holding `leases/.lock` shared while fetching and indexing so that no eviction runs between a file blob's
/// ingest and the index that names it. After a layer's first use in this mount its files join the lease, its
/// blobs are touched for LRU, and the cache bound is enforced.
final class ServiceLayerProvider: LayerProvider {
    let runtime: NodeRuntime
    let fetchers: [(String, LayerFetcher)]
    let lease: HeldLease
    private let used = Mutex<Set<Digest>>([])
    private let bookkeeping = DispatchQueue(label: "mcvfs.lease-bookkeeping")
    static let lazyBookkeepingDelay = DispatchTimeInterval.seconds(2)

    init(runtime: NodeRuntime, fetchers: [(String, LayerFetcher)], lease: HeldLease) {
        self.runtime = runtime
        self.fetchers = fetchers
        self.lease = lease
    }

    func index(of layer: Descriptor, in image: CacheImage) throws -> LayerIndex {
        let index = try runtime.janitor.leases.withLock(exclusive: false) { try fetch(layer) }
        if used.withLock({ $0.insert(layer.digest).inserted }) {
            let firstUse: @Sendable () -> Void = { [runtime, lease] in
                let contents = index.contentDigests
                try? lease.add(layers: [layer.digest], blobs: Array(contents))
                for digest in contents.union([layer.digest]) where runtime.store.contains(digest) {
                    try? runtime.store.touch(digest)  // lazily indexed layers name contents not fetched yet
                }
                runtime.enforceBound()
                runtime.layerLoaded()
            }
            // A layer indexed from its TOC names thousands of contents, nearly all still remote: leasing them and
            // touching the local ones waits until the first kernels are served (the lease write holds the lock
            // every fetch takes). Should an eviction take a local one meanwhile, it is fetched and verified again
            // when read, never served wrong.
            if index.remote != nil {
                bookkeeping.asyncAfter(deadline: .now() + Self.lazyBookkeepingDelay, execute: firstUse)
            } else {
                firstUse()
            }
        }
        return index
    }

    private func fetch(_ layer: Descriptor) throws -> LayerIndex {
        for (i, (name, fetcher)) in fetchers.enumerated() {
            do {
                return try fetcher.index(of: layer)
            } catch  where i < fetchers.count - 1 {
                runtime.noteMirrorFallback("on layer \(layer.digest.short) (\(name))", error)
            }
        }
        throw NodeError("no layer source")  // unreachable: the last fetcher's error propagates
    }

    func path(of content: Digest) -> String? { fetchers[0].1.path(of: content) }

    /// Through the mirror, then the origin, under `leases/.lock` shared like `index(of:)`: this mount's lease
    /// already names the content, so no eviction can take it between its ingest and its first read.
    func materialize(_ content: Digest) throws -> String {
        try firstSource(of: content) { try $0.materialize(content) }
    }

    func source(of content: Digest) throws -> FileSource {
        try firstSource(of: content) { try $0.source(of: content) }
    }

    private func firstSource<R>(of content: Digest, _ body: (LayerFetcher) throws -> R) throws -> R {
        try runtime.janitor.leases.withLock(exclusive: false) {
            var lastError: (any Error)?
            for (name, fetcher) in fetchers {
                do { return try body(fetcher) } catch LayerFetcher.FetchError.unknownContent {
                    continue
                } catch {
                    if fetcher !== fetchers.last!.1 {
                        runtime.noteMirrorFallback("on file \(content.short) (\(name))", error)
                    }
                    lastError = error
                }
            }
            throw lastError ?? LayerFetcher.FetchError.unknownContent(content)
        }
    }

    func contents(of content: Digest) throws -> Data {
        for (_, fetcher) in fetchers {
            if let data = try? fetcher.contents(of: content) { return data }
        }
        return try Data(contentsOf: URL(fileURLWithPath: try materialize(content)))
    }

    func persistPrefetched() {
        try? runtime.janitor.leases.withLock(exclusive: false) {
            for (_, fetcher) in fetchers { fetcher.persistPrefetched() }
        }
    }

    func prefetch(_ contents: [Digest]) {
        try? runtime.janitor.leases.withLock(exclusive: false) {
            for (_, fetcher) in fetchers { fetcher.prefetch(contents) }
        }
    }
}
