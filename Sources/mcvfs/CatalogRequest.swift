import BlobCache
import CacheRepository
import GPU
import OCI
import Registry

/// What the one-shot commands (fetch, extract) start from: a reference resolved to its catalog for the selected
/// GPUs, with the trust policy applied.
struct CatalogRequest {
    let reference: ImageReference
    let selection: ResolvedSelection
    let client: RegistryClient
    let store: DirectoryBlobStore
    var catalog: Catalog

    /// - Parameter record: keep the catalog as a mount would, so a later `mount --offline` resolves tags to it.
    init(
        _ text: String, global: GlobalOptions, gpu: GPUOptions, tritonVersion: TritonVersionOptions,
        trust: TrustOptions, record: Bool = false
    ) throws {
        reference = try ImageReference(parsing: text)
        selection = try gpu.resolve()
        client = try global.client(for: reference)
        store = try global.store()
        catalog = try ImageResolver(client: client, store: store)
            .catalog(for: reference, accepts: selection.accepts, selectionDescription: selection.description)
        if record {
            try? CatalogRecord(root: try global.cacheRoot()).save(catalog, selection: selection.description)
        }
        tritonVersion.apply(to: &catalog)  // before verifying signatures of images that would go unused
        try trust.enforce(on: &catalog, reference: reference, client: client)
    }
}
