import ArgumentParser
import GPU
import ImageFS
import NodeService
import OCI

/// `mount --refresh-interval`: a repository mount picks up new and moved tags while it serves.
struct MountRefreshOptions: ParsableArguments {
    @Option(
        help: """
            For a repository mount (no tag): re-list its tags every SECONDS, and add the new (or moved) images \
            that suit the GPUs and pass the signature policy to the served tree, without a remount. Served files \
            never change; names that did not exist are found after the next refresh. Off by default.
            """)
    var refreshInterval: Double?

    func validate() throws {
        if let refreshInterval, refreshInterval <= 0 { throw ValidationError("--refresh-interval must be positive") }
    }

    /// The refresher of a mount of `reference`; nil without `--refresh-interval`.
    func refresher(
        for reference: ImageReference, catalog: Catalog, node: NodeRuntime, selection: ResolvedSelection,
        narrow: @escaping @Sendable (inout Catalog) -> Void, policy: any CatalogPolicy, fileSystem: ImageFileSystem,
        status: MountStatusBoard
    ) throws -> CatalogRefresher? {
        guard let refreshInterval else { return nil }
        guard reference.isRepositoryOnly else {
            throw ValidationError("--refresh-interval refreshes a repository's tags; \(reference) names one image")
        }
        guard !node.upstream.isOffline else {
            throw ValidationError("--refresh-interval and --offline exclude each other")
        }
        let refresher = CatalogRefresher(
            catalog: catalog, upstream: node.upstream, store: node.cache.store,
            records: CatalogRecords(layout: node.cache.layout), selection: selection, narrow: narrow, policy: policy,
            interval: .milliseconds(Int64(refreshInterval * 1000)),
            apply: { added, catalog in
                fileSystem.add(images: added)
                // Their layers' indexes (an eStargz TOC: a few ranges) load now, not at the first lookup that
                // wants them: the first hit on a new kernel then waits for nothing.
                _ = fileSystem.load()
                status.update(catalog: catalog)
                node.update(catalog: catalog)
            }, log: .process)
        node.report(refresh: { refresher.status })
        return refresher
    }
}
