import GPU
import NodeService
import OCI

/// What the commands that fetch without mounting (`fetch`, `extract`) start from: the reference resolved to its
/// catalog for the selected GPUs, with the trust policy applied, and the leased provider that is their only way
/// to layers (so a `cache prune` beside them never takes what they fetch).
struct LeasedCatalog {
    let reference: ImageReference
    let selection: ResolvedSelection
    let catalog: Catalog
    let layers: LeasedLayerProvider

    /// - Parameters:
    ///   - tritonVersion: nil uses every image whatever Triton compiled it (`convert` keeps them all).
    ///   - recording: `.record` keeps the catalog as a mount would, so a later `mount --offline` resolves tags to it.
    init(
        _ text: String, command: String, global: GlobalOptions, gpu: GPUOptions,
        tritonVersion: TritonVersionOptions?, trust: TrustOptions, recording: CatalogService.Recording
    ) throws {
        reference = try ImageReference(parsing: text)
        selection = try gpu.resolve()
        let cache = try NodeCache(layout: try global.cache.layout(), log: .process)
        let upstream = Upstream(reference: reference, origin: try global.client(for: reference), log: .process)
        catalog = try CatalogService(
            upstream: upstream, store: cache.store, records: CatalogRecords(layout: cache.layout), recording: recording
        ).resolve(selection, narrow: { tritonVersion?.apply(to: &$0) }, policy: trust.catalogPolicy(cache.layout))
        layers = try LeasedLayerProvider(
            catalog: catalog, upstream: upstream, cache: cache, options: .init(command: command, lazy: false))
    }
}
