import Foundation
import ImageFS
import MetricsEndpoint
import OCI
import RemoteLayers
import Synchronization

/// What `mount` does as a node service, one per mount process: resolves the catalog (offline, mirrored, recorded),
/// holds the lease through the layer provider, keeps the cache bound, serves metrics and tells systemd.
///
/// Lock order: `state` is a leaf, never held across I/O or while taking another lock.
public final class NodeRuntime: Sendable {
    public let upstream: Upstream
    public let cache: NodeCache
    public let mountpoint: String
    public let catalogs: CatalogService
    public let fuseErrors = FUSEErrorCounter()
    public let metrics: FetchMetrics
    /// What a scrape returns: the node's families, set at each scrape, and the fetch histogram, observed live.
    let exposition: Exposition
    let notifier: SystemdNotifier
    let metricsServer: MetricsServer?
    let log: NodeLog
    private let state = Mutex(State())

    struct State {
        var catalog: Catalog?
        var provider: LeasedLayerProvider?
        var publishing: (any MountActivity)?
        var refresh: (@Sendable () -> MountStatus.Refresh)?
        /// Where each used image stands, once the filesystem exists.
        var images: (@Sendable () -> [ImageSet.Status])?
        /// Why the mount's fleet loop is open to registry writers without a key (`report(signatureWarning:)`).
        var signatureWarning: String?
        var keyConflicts: (@Sendable () -> Int)?
    }

    /// Binds the metrics listener now, so a taken port fails the mount before it is announced.
    public init(
        upstream: Upstream, cache: NodeCache, mountpoint: String, metricsListen: MetricsServer.Address? = nil,
        notifier: SystemdNotifier = SystemdNotifier(), log: NodeLog = .silent
    ) throws {
        self.upstream = upstream
        self.cache = cache
        self.mountpoint = mountpoint
        self.notifier = notifier
        self.log = log
        let exposition = Exposition()
        self.exposition = exposition
        metrics = FetchMetrics(observeFetch: NodeMetrics.layerFetchSeconds(in: exposition))
        self.catalogs = CatalogService(
            upstream: upstream, store: cache.store, records: CatalogRecords(layout: cache.layout),
            recording: .recordAndFallBack)
        let box = Mutex<NodeRuntime?>(nil)
        metricsServer = try metricsListen.map { address in
            try MetricsServer(address: address, exposition: exposition) {
                box.withLock { $0 }.map { NodeMetrics.families($0.metricsSample) } ?? []
            }
        }
        box.withLock { $0 = self }
    }

    /// The layer provider for the mount's filesystem, holding the mount's lease. Call once, with the catalog
    /// the mount serves (after its policy).
    public func provider(for catalog: Catalog, prefetch: PrefetchPolicy.Mode = .none) throws -> LeasedLayerProvider {
        let provider = try LeasedLayerProvider(
            catalog: catalog, upstream: upstream, cache: cache,
            options: .init(command: "mount", mountpoint: mountpoint, lazy: true, prefetch: prefetch), metrics: metrics,
            onLayerLoaded: { [weak self] count in self?.layerLoaded(count) })
        state.withLock {
            $0.catalog = catalog
            $0.provider = provider
        }
        return provider
    }

    /// Where status and metrics read the mount's automatic publishing from (read without any lock held).
    public func report(publishing: any MountActivity) {
        state.withLock { $0.publishing = publishing }
    }

    /// Where status and metrics read the mount's live refresh from (called without any lock held).
    public func report(refresh: @escaping @Sendable () -> MountStatus.Refresh) {
        state.withLock { $0.refresh = refresh }
    }

    /// A mount that refreshes or publishes with no signature policy: status shows `warning`, and metrics set
    /// `mcvfs_signature_policy_missing` to 1, so a fleet's dashboards find such nodes.
    public func report(signatureWarning warning: String) { state.withLock { $0.signatureWarning = warning } }

    /// The catalog a refresh grew: metrics count its images from now on.
    public func update(catalog: Catalog) { state.withLock { $0.catalog = catalog } }

    /// Metrics name each used image's state from now on.
    public func watch(_ fileSystem: ImageFileSystem) {
        state.withLock {
            $0.images = { fileSystem.imageStatus }
            $0.keyConflicts = { fileSystem.report?.keyConflicts ?? 0 }
        }
    }

    // MARK: Lifecycle

    /// The mount serves: start metrics and tell systemd. A replacement (`--replace`, run by `systemctl reload`)
    /// first names itself the service's main process: the daemon it replaces is about to exit.
    public func serving(_ message: String, replacing: Bool = false) {
        if let metricsServer {
            metricsServer.start()
            log.info("metrics at http://\(metricsServer.address)/metrics")
        }
        do {
            if replacing { try notifier.send(["MAINPID=\(getpid())"]) }
            try notifier.ready(status: message)
        } catch { log.warning("sd_notify READY: \(error)") }
    }

    /// Refreshes the `STATUS=` line `systemctl status` shows, after a layer comes into use.
    func layerLoaded(_ count: Int) {
        guard notifier.isEnabled else { return }
        let fetched = ByteSize.format(metrics.snapshot.bytesFetched)
        try? notifier.status(
            "serving \(upstream.reference) at \(mountpoint); \(count) layer(s) in use, \(fetched) fetched")
    }

    /// The FUSE loop ended (unmount or signal); the mount is about to go.
    public func stopping() {
        do { try notifier.stopping(status: "unmounting \(mountpoint)") } catch {
            log.warning("sd_notify STOPPING: \(error)")
        }
    }

    /// The mount is gone: stop serving metrics, and drop the lease so its layers become evictable.
    public func finished() {
        metricsServer?.shutdown()
        let provider = state.withLock { current -> LeasedLayerProvider? in
            defer { current.provider = nil }
            return current.provider
        }
        provider?.release()
    }

    // MARK: Observability

    /// The node-service part of the status document.
    public var status: @Sendable (_ viewer: UInt32?) -> MountStatus.Service {
        { [self] viewer in
            let (lease, publishing, refresh, warning) = state.withLock {
                ($0.provider?.lease.file, $0.publishing, $0.refresh, $0.signatureWarning)
            }
            let evictions = cache.evictions
            return MountStatus.Service(
                offline: upstream.isOffline, mirror: upstream.mirror?.host, mirrorFallbacks: upstream.mirrorFallbacks,
                metricsListen: metricsServer.map { "\($0.address)" }, cacheDir: cache.layout.root,
                cacheMaxSize: cache.maxSize, cacheSize: try? cache.store.totalSize(), evictedBlobs: evictions.blobs,
                evictedBytes: evictions.bytes, lease: lease, fuseErrors: fuseErrors.summary,
                systemdNotify: notifier.isEnabled, publishing: publishing?.statusSection(for: viewer),
                refresh: refresh?(),
                signatureWarning: warning)
        }
    }

    var metricsSample: NodeMetrics.Sample {
        let (catalog, images, keyConflicts, publishing, refresh, warning) = state.withLock {
            ($0.catalog, $0.images, $0.keyConflicts, $0.publishing, $0.refresh, $0.signatureWarning)
        }
        var sample = NodeMetrics.Sample()
        sample.signaturePolicyMissing = warning != nil
        sample.activities = publishing?.metricFamilies ?? []
        sample.refresh = refresh?()
        sample.fetch = metrics.snapshot
        sample.mirrorFallbacks = upstream.mirrorFallbacks
        sample.evictedBytes = cache.evictions.bytes
        sample.fuseErrors = fuseErrors.snapshot
        sample.imagesUsed = catalog?.used.count ?? 0
        sample.imagesSkipped = catalog?.skipped.count ?? 0
        sample.images = images?() ?? []
        sample.keyConflicts = keyConflicts?() ?? 0
        sample.cacheSize = try? cache.store.totalSize()
        sample.cacheMaxSize = cache.maxSize
        return sample
    }
}
