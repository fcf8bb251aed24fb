import BlobCache
import Foundation
import OCI
import Registry
import TarIndex

/// Whole-layer downloads: the blob streamed into the store, which hashes it on the way and commits it only when it
/// matches the layer digest, then unpacked into verified file blobs and indexed. Two downloads of one layer, in
/// this process or another, take the store's ingest lock: the second finds the blob there.
struct LayerDownloader: Sendable {
    /// nil when offline: only a blob already in the store can be indexed.
    var client: RegistryClient?
    var repository: String
    var store: DirectoryBlobStore
    var metrics: FetchMetrics

    /// Downloads `layer` into the store unless it is there.
    /// - Returns: the blob's local path.
    /// - Throws: `FetchError.offline`; `RegistryError.digestMismatch` or `CacheError` (nothing is committed then);
    ///   registry errors.
    func blob(_ layer: Descriptor) throws -> String {
        if let path = store.path(for: layer.digest) { return path }
        guard let client else { throw LayerFetcher.FetchError.offline(layer.digest) }
        return try store.ensure(layer.digest, expectedSize: layer.size) { writer in
            let start = ContinuousClock.now
            try client.getBlob(repository: repository, digest: layer.digest, range: nil) { chunk in
                try writer.write(chunk)
            }
            let elapsed = ContinuousClock.now - start
            metrics.fetched(
                bytes: layer.size,
                seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
    }

    /// Downloads (unless local) and indexes `layer`, storing every file as a verified blob.
    /// - Throws: as `blob(_:)`; `TarError` for a corrupt layer or hostile entries.
    func index(_ layer: Descriptor, into indexes: LayerIndexCache) throws -> LayerIndex {
        try indexes.build(layer: layer.digest, blobPath: try blob(layer), mediaType: layer.mediaType)
    }
}
