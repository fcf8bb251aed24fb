import BlobCache
import Foundation
import OCI
import Registry

/// Turns a reference into a `Catalog`: lists tags, fetches manifests and configs (never layers), and decides
/// which images a host can use. Tags are resolved to digests here, once; a mount pins what this returns.
public struct ImageResolver: Sendable {
    private let client: RegistryClient
    private let store: any BlobStore

    public init(client: RegistryClient, store: any BlobStore) {
        self.client = client
        self.store = store
    }

    /// - Parameters:
    ///   - accepts: whether a target can run on the selected GPUs.
    ///   - selectionDescription: how the selection reads in a skip reason (`cuda:90:32`).
    public func catalog(
        for reference: ImageReference, accepts: (GPUTarget) -> Bool, selectionDescription: String
    ) throws -> Catalog {
        var entries: [Catalog.Entry] = []
        if reference.isRepositoryOnly {
            for tag in try client.listTags(repository: reference.repository).sorted() {
                if ArtifactTag.isCosign(tag) {
                    entries.append(skipped(tag, reason: "signature or attestation tag, not a cache image"))
                    continue
                }
                entries += try describe(name: tag, reference: tag, repository: reference.repository)
            }
        } else {
            entries = try describe(
                name: reference.digest?.description ?? reference.reference, reference: reference.reference,
                repository: reference.repository)
        }
        for i in entries.indices where entries[i].skipReason == nil {
            if let targets = entries[i].targets, !targets.contains(where: accepts) {
                let names = targets.map(\.description).joined(separator: ", ")
                entries[i].skipReason = "targets \(names) do not match the selected GPUs (\(selectionDescription))"
            }
        }
        return Catalog(repository: reference.repositoryName, reference: reference.description, entries: entries)
    }

    private func describe(name: String, reference: String, repository: String) throws -> [Catalog.Entry] {
        let fetched: FetchedManifest
        do {
            fetched = try client.getManifest(repository: repository, reference: reference)
        } catch let error as RegistryError where !error.isTransient {
            return [skipped(name, reason: "manifest unusable: \(error)")]
        }
        switch fetched.document {
        case .index(let index):
            var entries: [Catalog.Entry] = []
            for (n, child) in index.manifests.enumerated() where MediaType.isManifest(child.mediaType) {
                let childName = "\(name)[\(n)]"
                do {
                    let manifest = try client.getManifest(repository: repository, reference: child.digest.description)
                    var child = try entry(childName, manifest, repository: repository)
                    child.indexDigest = fetched.digest
                    entries.append(child)
                } catch let error as RegistryError where !error.isTransient {
                    entries.append(skipped(childName, reason: "manifest unusable: \(error)"))
                }
            }
            return entries
        case .manifest:
            return [try entry(name, fetched, repository: repository)]
        }
    }

    private func entry(_ name: String, _ fetched: FetchedManifest, repository: String) throws -> Catalog.Entry {
        guard case .manifest(let manifest) = fetched.document else {
            return skipped(name, reason: "nested index, not an image")
        }
        var entry = Catalog.Entry(
            name: name, digest: fetched.digest, mediaType: fetched.mediaType, image: nil, kinds: [], targets: nil,
            skipReason: nil)
        if manifest.config.mediaType.hasPrefix("application/vnd.dev.cosign")
            || manifest.layers.contains(where: { $0.mediaType == MediaType.cosignSimpleSigning })
        {
            entry.skipReason = "cosign artifact, not a cache image"
            return entry
        }
        let config = try ImageConfig(parsing: try configBlob(manifest.config, repository: repository))
        let labels = CacheLabels(config.labels)
        entry.kinds = labels.kinds.sorted { $0.rawValue < $1.rawValue }
        entry.targets = labels.targets
        if let reason = labels.unservableReason {
            entry.skipReason = reason
            return entry
        }
        guard labels.isCacheImage else {
            entry.skipReason = "no cache labels (cache.triton.image/*, model.cache.image/*), not a cache image"
            return entry
        }
        if let layer = manifest.layers.first(where: { !MediaType.isTarLayer($0.mediaType) }) {
            entry.skipReason = "layer \(layer.digest.short) has unsupported media type \(layer.mediaType)"
            return entry
        }
        entry.image = CacheImage(name: name, digest: fetched.digest, layers: manifest.layers, labels: config.labels)
        return entry
    }

    /// Configs are small and content-addressed: kept in the store so a warm remount needs no registry.
    private func configBlob(_ descriptor: Descriptor, repository: String) throws -> Data {
        if let path = store.path(for: descriptor.digest), let data = FileManager.default.contents(atPath: path) {
            return data
        }
        let data = try client.getBlob(repository: repository, digest: descriptor.digest)
        _ = try store.ingest(data: data, expected: descriptor.digest)
        return data
    }

    private func skipped(_ name: String, reason: String) -> Catalog.Entry {
        Catalog.Entry(
            name: name, digest: nil, mediaType: nil, image: nil, kinds: [], targets: nil, skipReason: reason)
    }
}
