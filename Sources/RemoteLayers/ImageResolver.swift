import BlobCache
import Foundation
import OCI
import Registry

/// Turns a reference into a `Catalog`: lists tags, fetches manifests and configs (never layers), and decides
/// which images a host can use. Tags are resolved to digests here, once; a mount pins what this returns.
///
/// In a repository, a tag whose manifest or config is unusable (missing, not JSON, the wrong size, a child of an
/// index that is gone) is skipped with the reason, like any tag that is not a cache image: one bad push must
/// not take the other tags away. A tag or digest named on its own that is unusable is an error.
public struct ImageResolver: Sendable {
    /// The reference named one image (or index), and nothing of it can be used.
    public struct UnusableReference: Error, CustomStringConvertible {
        public var reference: String
        public var reasons: [String]

        public var description: String { "\(reference) is unusable: \(reasons.joined(separator: "; "))" }
    }

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
        var problems: [String] = []
        if reference.isRepositoryOnly {
            // An unusable tag is skipped with its reason like any other (`problems` only matter for one image).
            for tag in try client.listTags(repository: reference.repository).sorted() {
                if ArtifactTag.isCosign(tag) {
                    entries.append(skipped(tag, reason: "signature or attestation tag, not a cache image"))
                    continue
                }
                entries += try describe(
                    name: tag, reference: tag, repository: reference.repository, problems: &problems)
            }
        } else {
            entries = try describe(
                name: reference.digest?.description ?? reference.reference, reference: reference.reference,
                repository: reference.repository, problems: &problems)
            if !problems.isEmpty, !entries.contains(where: { $0.image != nil }) {
                throw UnusableReference(reference: reference.description, reasons: problems)
            }
        }
        for i in entries.indices where entries[i].skipReason == nil {
            if let targets = entries[i].targets, !targets.contains(where: accepts) {
                let names = targets.map(\.description).joined(separator: ", ")
                entries[i].skipReason = "targets \(names) do not match the selected GPUs (\(selectionDescription))"
            }
        }
        return Catalog(repository: reference.repositoryName, reference: reference.description, entries: entries)
    }

    /// - Parameter problems: collects why an image is unusable (as opposed to skipped by choice).
    private func describe(name: String, reference: String, repository: String, problems: inout [String]) throws
        -> [Catalog.Entry]
    {
        var unusable: [String] = []
        defer { problems += unusable }
        let fetched: FetchedManifest
        do {
            fetched = try client.getManifest(repository: repository, reference: reference)
        } catch let error as RegistryError where !error.isTransient {
            unusable.append("manifest unusable: \(error)")
            return [skipped(name, reason: unusable[0])]
        }
        switch fetched.document {
        case .index(let index):
            var entries: [Catalog.Entry] = []
            for (n, child) in index.manifests.enumerated() {
                let childName = "\(name)[\(n)]"
                guard MediaType.isManifest(child.mediaType) else {
                    entries.append(
                        skipped(childName, reason: "index entry of media type \(child.mediaType), not an image"))
                    continue
                }
                do {
                    let manifest = try client.getManifest(repository: repository, reference: child.digest.description)
                    var child = try entry(childName, manifest, repository: repository, problems: &unusable)
                    child.indexDigest = fetched.digest
                    entries.append(child)
                } catch let error as RegistryError where !error.isTransient {
                    unusable.append("manifest \(child.digest.short) listed by the index is unusable: \(error)")
                    entries.append(skipped(childName, reason: unusable[unusable.count - 1]))
                }
            }
            return entries
        case .manifest:
            return [try entry(name, fetched, repository: repository, problems: &unusable)]
        }
    }

    private func entry(_ name: String, _ fetched: FetchedManifest, repository: String, problems: inout [String])
        throws -> Catalog.Entry
    {
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
        let config: ImageConfig
        do {
            config = try ImageConfig(parsing: try configBlob(manifest.config, repository: repository))
        } catch let error as RegistryError where error.isTransient {
            throw error
        } catch {
            problems.append("config \(manifest.config.digest.short) unusable: \(error)")
            entry.skipReason = problems[problems.count - 1]
            return entry
        }
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

    /// Configs are small and content-addressed: kept in the store so a warm remount needs no registry. The
    /// descriptor's size is checked as well as the digest (a manifest that lies about it is malformed).
    private func configBlob(_ descriptor: Descriptor, repository: String) throws -> Data {
        if let path = store.path(for: descriptor.digest), let data = FileManager.default.contents(atPath: path) {
            return try Self.checkSize(data, descriptor)
        }
        let data = try Self.checkSize(try client.getBlob(repository: repository, digest: descriptor.digest), descriptor)
        _ = try store.ingest(data: data, expected: descriptor.digest)
        return data
    }

    struct SizeMismatch: Error, CustomStringConvertible {
        var descriptor: Int64
        var actual: Int

        var description: String { "the blob is \(actual) bytes, its descriptor says \(descriptor)" }
    }

    private static func checkSize(_ data: Data, _ descriptor: Descriptor) throws -> Data {
        guard Int64(data.count) == descriptor.size else {
            throw SizeMismatch(descriptor: descriptor.size, actual: data.count)
        }
        return data
    }

    private func skipped(_ name: String, reason: String) -> Catalog.Entry {
        Catalog.Entry(
            name: name, digest: nil, mediaType: nil, image: nil, kinds: [], targets: nil, skipReason: reason)
    }
}
