import FUSEBridge
import FUSEMount
import Foundation
import Glibc
import ImageFS
import NodeService
import OCI
import Publishing

/// A registry repository served as a cache directory on this node, built from its configuration: the catalog the
/// policy lets through, the image filesystem over the leased layers, the writable overlay, the status document,
/// live refresh and automatic publishing, the FUSE session; served until it is unmounted or replaced. Commands map
/// their flags to a `MountConfiguration` and run one of these; only the refusals speak of flags, to name the fix.
public struct RepositoryMount {
    /// How long the last publish at unmount may take: within systemd's `TimeoutStopSec=30` and a pod's grace period.
    public static let publishAtUnmountBudget = Duration.seconds(20)

    public let configuration: MountConfiguration
    let log: NodeLog

    public init(_ configuration: MountConfiguration, log: NodeLog) {
        self.configuration = configuration
        self.log = log
    }

    /// Builds the mount and serves it until the FUSE session ends, then publishes what was compiled since the last
    /// publish and releases the lease.
    /// - Parameters:
    ///   - message: the line the service manager (and whoever waits for the mount) gets, for the catalog served.
    ///   - serving: called with that line once the mount serves, its metrics listen and systemd knows: a caller
    ///     waiting on it (a terminal, a readiness probe) may use all of it from then on.
    public func run(message: (Catalog) throws -> String, serving: (String) -> Void) throws {
        let config = configuration
        try config.validate()
        let placement = try MountPlacement.inspect(config.mountpoint, replace: config.replace, log: log)
        let node = try NodeRuntime(
            upstream: try upstream(),
            cache: try NodeCache(layout: config.cache, maxSize: config.cacheMaxSize, log: log),
            mountpoint: config.mountpoint, metricsListen: config.metricsListen, log: log)
        let catalog = try self.catalog(from: node)
        let parts = try build(catalog: catalog, node: node)
        // mcvfs attaches the connection itself (beneath a mount it replaces) and libfuse serves it through
        // /dev/fd/N; for a non-root user (nil), libfuse mounts it with fusermount3.
        let fsName = "mcvfs#\(config.reference)"
        let attached = try placement.attach(
            FUSEMount.Options(fsName: fsName, allowOther: config.allowOther, uid: getuid(), gid: getgid()))
        let session = FUSESession(
            fileSystem: parts.overlay ?? parts.images,
            options: FUSESession.Options(
                mountpoint: attached?.libfuseMountpoint ?? config.mountpoint, fsName: fsName,
                allowOther: config.allowOther, traceErrors: config.traceErrors,
                operationBudget: config.registries.operationBudget),
            log: log.warning, onError: node.fuseErrors.record,
            onConnected: { [config, log] in
                guard config.readAheadKiB > 0 else { return }
                do { try ReadAhead.set(kibibytes: config.readAheadKiB, mountpoint: config.mountpoint) } catch {
                    log.info("read-ahead left at the kernel's default: \(error)")
                }
            })
        do { try session.mount() } catch {
            attached?.abandon()
            throw error
        }
        log.info(
            "mounted \(config.reference) at \(config.mountpoint): \(catalog.used.count) image(s) used, "
                + "\(catalog.skipped.count) skipped")
        // A DaemonSet mounts long before pods start: with everything prefetched, fetching starts now, not at the
        // first lookup.
        if config.prefetch == .all { parts.images.indexLazyLayers() }
        let line = try message(catalog)
        node.serving(line, replacing: placement.replacesLiveMount)
        serving(line)
        parts.refresher?.start()
        parts.publisher?.start()
        placement.takeOver()
        let readyFile = config.readyFile.map { ReadyFile(path: $0, log: log) }
        readyFile?.create(mountID: attached?.mountID ?? FUSEMount.topMountID(at: config.mountpoint) ?? 0)
        // A replaced mount's daemon is not stopping the service: its successor is (STOPPING=1 would stop both).
        let signal = try session.run(stopping: {
            readyFile?.remove()
            if !MountPlacement.isReplaced(attached) { node.stopping() }
        })
        // Our own mount only, if still on top: when stopped before the replacement detached it, or unreplaced.
        let replaced = MountPlacement.isReplaced(attached)
        attached?.detachIfTop()
        if replaced {
            log.info("\(config.mountpoint) is served by a newer mount now")
            if signal == 0 && MountPlacement.waitsWhenReplaced { MountPlacement.waitForStop() }
        }
        parts.refresher?.stop()
        // What was compiled since the last publish goes now (a successor serving the same uppers would only find
        // it published: the ledger's lock orders the two).
        parts.publisher?.stop(within: Self.publishAtUnmountBudget)
        parts.images.persistPrefetched()
        node.finished()
        log.info("unmounted \(config.mountpoint)")
    }

    /// Where the mount reads the repository from: nothing offline; else the origin, and the mirror first.
    func upstream() throws -> Upstream {
        let registries = configuration.registries
        let reference = configuration.reference
        switch registries.source {
        case .offline:
            return Upstream(reference: reference, origin: nil, log: log)
        case .origin:
            return Upstream(
                reference: reference, origin: try registries.client(for: reference, role: .origin), log: log)
        case .mirrored(let host):
            let mirror = Upstream.Mirror(
                host: host, client: try registries.client(for: reference.onRegistry(host), role: .mirror))
            return Upstream(
                reference: reference, origin: try registries.client(for: reference, role: .origin), mirror: mirror,
                log: log)
        }
    }

    /// The catalog the mount serves: resolved, narrowed and passed through the policy, each image's use said.
    func catalog(from node: NodeRuntime) throws -> Catalog {
        let config = configuration
        let catalog = try node.catalogs.resolve(config.selection, narrow: config.narrow, policy: config.policy)
        for entry in catalog.entries {
            log.info(
                entry.isUsed
                    ? "using \(entry.name) \(entry.digest?.short ?? "")"
                    : "skipping \(entry.name): \(entry.skipReason ?? "")")
        }
        if let warning = catalog.nothingSelectedWarning(selection: config.selection.description) {
            log.warning(warning)
        }
        if config.writes == .readOnly, let image = catalog.used.first(where: { $0.cacheLabels.kinds.contains(.vllm) }) {
            throw Refusal.readOnlyVLLM(image: image.name)
        }
        let environment = catalog.consumerEnvironment(root: config.consumerRoot)
        if !environment.isEmpty {
            log.info("consumers set " + environment.map { "\($0.name)=\($0.value)" }.joined(separator: " "))
        }
        return catalog
    }
}
