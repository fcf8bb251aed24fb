import ArgumentParser
import GPU
import ImageFS
import NodeService
import OCI

/// `mount --refresh-interval`: a repository mount picks up new and moved tags while it serves.
struct MountRefreshOptions: ParsableArguments {
    @Option(
        name: .customLong("refresh-interval"),
        help: """
            For a repository mount (no tag): re-list its tags every SECONDS, and add the new (or moved) images \
            that suit the GPUs and pass the signature policy to the served tree, without a remount. Served files \
            never change; names that did not exist are found after the next refresh. Default: \
            $MCVFS_REFRESH_INTERVAL (empty: off).
            """)
    var refreshIntervalOption: Double?

    /// `--refresh-interval`, else `MCVFS_REFRESH_INTERVAL`.
    var refreshInterval: Double? {
        refreshIntervalOption ?? setting(nil, "MCVFS_REFRESH_INTERVAL").flatMap(Double.init)
    }

    func validate() throws {
        if setting(nil, "MCVFS_REFRESH_INTERVAL") != nil && refreshIntervalOption == nil && refreshInterval == nil {
            throw ValidationError("MCVFS_REFRESH_INTERVAL must be a number of seconds")
        }
        if let refreshInterval, refreshInterval <= 0 || !refreshInterval.isFinite {
            throw ValidationError("--refresh-interval must be a positive number of seconds")
        }
    }

    /// The refresher of a mount of `reference`; nil without `--refresh-interval`.
    func refresher(
        for reference: ImageReference, catalog: Catalog, node: NodeRuntime, selection: ResolvedSelection,
        narrow: @escaping @Sendable (inout Catalog) -> Void, policy: any CatalogPolicy, fileSystem: ImageFileSystem,
        firstSeen: FirstSeen, status: MountStatusBoard
    ) throws -> CatalogRefresher? {
        guard let refreshInterval else { return nil }
        let unusable =
            !reference.isRepositoryOnly
            ? "refreshes a repository's tags; \(reference) names one image"
            : node.upstream.isOffline ? "needs the registry, and the mount is --offline" : nil
        if let unusable {
            // Asked for on the command line, it is an error; set for every mount of a node, it is left off here.
            guard refreshIntervalOption == nil else { throw ValidationError("--refresh-interval \(unusable)") }
            Log.info("MCVFS_REFRESH_INTERVAL left off: live refresh \(unusable)")
            return nil
        }
        let refresher = CatalogRefresher(
            catalog: catalog, upstream: node.upstream, store: node.cache.store,
            records: CatalogRecords(layout: node.cache.layout), selection: selection, narrow: narrow, policy: policy,
            interval: .milliseconds(Int64(refreshInterval * 1000)),
            apply: { added, catalog in
                // A remount ranks them as this mount does: after every image it had.
                _ = firstSeen.batches(of: added, pruning: false)
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
