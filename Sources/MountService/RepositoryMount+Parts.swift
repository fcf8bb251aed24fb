import Foundation
import Glibc
import ImageFS
import NodeService
import OCI
import Publishing

extension RepositoryMount {
    /// Why a mount is refused, each naming the fix: by `MountConfiguration.validate()` before anything is read, or
    /// once the catalog shows a vLLM image on a read-only mount.
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        /// A read-only mount of a vLLM cache (docs/vllm.md, "Read-only").
        case readOnlyVLLM(image: String)
        /// Live refresh was asked for a mount that cannot refresh.
        case refreshUnusable(reason: String)
        /// Publishing needs uppers to harvest.
        case publishingNeedsUppers

        public var description: String {
            switch self {
            case .readOnlyVLLM(let image):
                return "\(image) is a vLLM cache, and vLLM cannot use it read-only: torch Inductor opens "
                    + "inductor_cache/locks/*.lock for writing even on a hit (EROFS). Mount without --read-only: "
                    + "what vLLM writes goes to the caller's own upper and the image never changes"
            case .refreshUnusable(let reason): return "--refresh-interval \(reason)"
            case .publishingNeedsUppers: return "--publish-to needs a writable mount (not --read-only)"
            }
        }
    }

    /// What a mount serves and runs beside serving, wired to the node.
    struct Parts {
        var images: ImageFileSystem
        var overlay: OverlayFileSystem?
        var refresher: CatalogRefresher?
        var publisher: AutoPublisher?
    }

    /// The filesystems over the node's leased layers, the status document, refresh and publishing.
    func build(catalog: Catalog, node: NodeRuntime) throws -> Parts {
        let config = configuration
        let provider = try node.provider(for: catalog, prefetch: config.prefetch)
        let owner = (uid: getuid(), gid: getgid())
        let options = ImageFileSystem.Options(
            tree: ImageTreeBuilder.Options(
                consumerRoot: config.consumerRoot, filter: config.selection.kernelFilter,
                worldReadable: config.allowOther),
            owner: owner, retryDelay: config.retryDelay, directIOFrom: config.directIOFrom,
            operationBudget: config.registries.operationBudget, log: log.warning)
        let status = MountStatusBoard()
        // Images this node never used before rank after those it did: a tag pushed while it was away adds KEYs.
        let firstSeen = FirstSeen(
            records: CatalogRecords(layout: config.cache), reference: config.reference.description,
            selection: config.selection.description, log: log)
        let images = ImageFileSystem(
            images: catalog.used, batches: firstSeen.batches(of: catalog.used, pruning: true), provider: provider,
            options: options, status: { status.render(for: $0) })
        node.watch(images)
        var overlay: OverlayFileSystem?
        var isolation: OverlayFileSystem.Isolation?
        if case .overlay(let upperRoot, let chosen) = config.writes {
            isolation = chosen
            try FileManager.default.createDirectory(
                atPath: (upperRoot as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            overlay = try OverlayFileSystem(
                lower: images,
                options: .init(
                    upperRoot: upperRoot, isolation: chosen, consumerRoot: config.consumerRoot,
                    log: log.warning),
                owner: owner)
        }
        status.set(
            MountStatus.Source(
                reference: config.reference.description, mountpoint: config.mountpoint,
                consumerRoot: config.consumerRoot, selection: config.selection.description, catalog: catalog,
                metrics: node.metrics, fileSystem: images, upperRoot: config.writes.upperRoot,
                isolation: isolation?.rawValue, overlay: overlay, service: node.status))
        let refresher = self.refresher(
            catalog: catalog, node: node, fileSystem: images, firstSeen: firstSeen, status: status)
        let publisher = try self.publisher(images: { images.images }, provider: provider)
        if let publisher { node.report(publishing: publisher) }
        if let warning = MountConfiguration.signatureWarning(
            refreshes: refresher != nil, publishes: publisher != nil, verifies: config.verifies)
        {
            log.warning(warning)
            node.report(signatureWarning: warning)
        }
        return Parts(images: images, overlay: overlay, refresher: refresher, publisher: publisher)
    }

    /// Live refresh of a repository mount; nil when not asked for, or set for the node but unusable here.
    func refresher(
        catalog: Catalog, node: NodeRuntime, fileSystem: ImageFileSystem, firstSeen: FirstSeen,
        status: MountStatusBoard
    ) -> CatalogRefresher? {
        let config = configuration
        guard let refresh = config.refresh else { return nil }
        if let unusable = config.refreshUnusable {
            // Asked for this mount, `validate()` refused it; set for every mount of a node, it is left off here.
            log.info("live refresh left off for this mount: live refresh \(unusable)")
            return nil
        }
        let refresher = CatalogRefresher(
            catalog: catalog, upstream: node.upstream, store: node.cache.store,
            records: CatalogRecords(layout: node.cache.layout), selection: config.selection, narrow: config.narrow,
            policy: config.policy, interval: refresh.interval,
            apply: { added, catalog in
                // A remount ranks them as this mount does: after every image it had.
                _ = firstSeen.batches(of: added, pruning: false)
                fileSystem.add(images: added)
                // Their layers' indexes (an eStargz TOC: a few ranges) load now, not at the first lookup that
                // wants them: the first hit on a new kernel then waits for nothing.
                _ = fileSystem.load()
                status.update(catalog: catalog)
                node.update(catalog: catalog)
            }, log: log)
        node.report(refresh: { refresher.status })
        return refresher
    }

    /// Automatic publishing of what is compiled through the mount; nil when not asked for.
    /// - Parameters:
    ///   - images: the images the mount serves now (a refreshed mount serves more over time).
    ///   - provider: the mount's layer provider, which reads their indexes.
    func publisher(
        images: @escaping @Sendable () -> [CacheImage], provider: any LayerProvider
    ) throws -> AutoPublisher? {
        let config = configuration
        guard let publishing = config.publishing else { return nil }
        guard case .overlay(let upperRoot, let isolation) = config.writes else {
            throw Refusal.publishingNeedsUppers
        }
        let uids = isolation == .shared ? [] : publishing.uids
        let uppers = try UpperSelection.uppers(root: upperRoot, isolation: isolation, caller: getuid(), uids: uids)
        let repository = publishing.repository
        let publisher = ImagePublisher(
            client: try config.registries.client(for: repository, role: .command),
            repository: repository.repository, options: publishing.options)
        let job = PublishJob(
            uppers: uppers, ledger: PublishLedger(layout: config.cache, repository: repository.repositoryName),
            publisher: publisher, limits: publishing.limits)
        let keys = ProvidedKeys()
        return AutoPublisher(
            job: job, interval: publishing.interval,
            status: AutoPublisher.Status(
                repository: repository.repositoryName, intervalSeconds: publishing.interval.seconds, uppers: uppers,
                signingKey: publishing.options.signing.map { "sha256:\($0.key.publicKey.fingerprint)" }),
            provided: { [log] in
                let (provided, unread) = keys.keys(of: images(), provider: provider)
                for problem in unread { log.warning("publish: cannot read the kernels of \(problem)") }
                return provided
            }, log: log)
    }
}
