import BlobCache
import NodeService
import OCI
import Registry
import RemoteLayers

/// The images a running mount serves, with their layers, as `mcvfs publish` finds them from outside the daemon:
/// from the catalog the daemon recorded in its cache directory, or, when that cannot be read (another user's
/// cache), from the registry by digest.
public enum MountedImages {
    /// - Parameters:
    ///   - client: a client for the mount's registry, used only for images the record lacks.
    ///   - store: where image configs read from the registry are kept.
    public static func images(
        of status: MountStatus, client: @autoclosure () throws -> RegistryClient, store: any BlobStore
    ) throws -> [CacheImage] {
        let digests = Set(status.used.compactMap { $0.digest.flatMap { try? Digest(parsing: $0) } })
        var found: [Digest: CacheImage] = [:]
        if let directory = status.service?.cacheDir, let layout = try? CacheLayout(root: directory),
            let recorded = CatalogRecords(layout: layout).load(reference: status.reference, selection: status.gpus)
        {
            for image in recorded.used where digests.contains(image.digest) { found[image.digest] = image }
        }
        let missing = digests.subtracting(found.keys).sorted { $0.description < $1.description }
        if !missing.isEmpty {
            let reference = try ImageReference(parsing: status.reference)
            let resolver = ImageResolver(client: try client(), store: store)
            for digest in missing {
                let pinned = ImageReference(
                    registry: reference.registry, repository: reference.repository, digest: digest)
                for image in try resolver.catalog(
                    for: pinned, accepts: { _ in true }, selectionDescription: status.gpus
                ).used {
                    found[image.digest] = image
                }
            }
        }
        return status.used.compactMap { used in used.digest.flatMap { try? Digest(parsing: $0) }.flatMap { found[$0] } }
    }

    /// The keys `images` provide, their layer indexes read through a lease on `cache` (a TOC's few ranges for an
    /// eStargz layer; nothing when the index is cached).
    /// - Returns: the keys, and a line for each image whose index could not be read.
    public static func providedKeys(
        _ images: [CacheImage], upstream: Upstream, cache: NodeCache
    ) throws -> (keys: Set<String>, unread: [String]) {
        guard !images.isEmpty else { return ([], []) }
        let catalog = Catalog(
            repository: upstream.reference.repositoryName, reference: upstream.reference.description,
            entries: images.map {
                Catalog.Entry(
                    name: $0.name, digest: $0.digest, mediaType: nil, image: $0, kinds: [], targets: $0.targets,
                    skipReason: nil)
            })
        let provider = try LeasedLayerProvider(
            catalog: catalog, upstream: upstream, cache: cache, options: .init(command: "publish", lazy: true))
        defer { provider.release() }
        return ProvidedKeys().keys(of: images, provider: provider)
    }
}
