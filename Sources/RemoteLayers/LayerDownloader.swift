import BlobCache
import Foundation
import LayerArchive
import OCI
import Registry

/// Whole-layer downloads. A layer is unpacked while it arrives (`LayerStream`: decompressed, read as a tar and
/// written into its pack, every file hashed, side by side with the download) and usable once the registry client
/// has checked the layer's digest after its last byte. The blob itself is kept too, written as it arrives and
/// committed with the pack (`PendingBlob`): the pack can always be made again from it without the network. A blob
/// already in the store is unpacked from there. Two processes unpacking one layer at the same moment each download
/// it; their packs are the same bytes, and the last commit wins.
struct LayerDownloader: Sendable {
    /// nil when offline: only a blob already in the store can be indexed.
    var client: RegistryClient?
    var repository: String
    var store: DirectoryBlobStore
    var metrics: FetchMetrics

    /// A layer downloaded and unpacked, nothing of it committed yet.
    struct Downloaded: Sendable {
        var unpacked: UnpackedLayer
        var blob: PendingBlob
    }

    /// Downloads `layer` and unpacks it as it arrives.
    /// - Returns: the index with its pack, readable, and the blob, neither committed.
    /// - Throws: `FetchError.offline`; `RegistryError.digestMismatch` or `CacheError.sizeMismatch` (nothing of the
    ///   layer is kept then); `TarError` for a corrupt layer or hostile entries; registry errors.
    func unpack(_ layer: Descriptor, with unpacker: LayerUnpacker) throws -> Downloaded {
        guard let client else { throw LayerFetcher.FetchError.offline(layer.digest) }
        let blob = try store.beginIngest(layer.digest, expectedSize: layer.size)
        let stream = try unpacker.stream(layer: layer.digest, mediaType: layer.mediaType)
        do {
            try timed(layer) {
                try client.getBlob(repository: repository, digest: layer.digest, range: nil) { chunk in
                    try blob.writer.write(chunk)
                    stream.write(chunk)
                }
            }
            // A shorter blob than the descriptor says must fail before anything of it is served: its commit, which
            // checks the size too, comes later in the background.
            try blob.checkSize()
        } catch {
            stream.cancel()
            blob.abort()
            throw error
        }
        return Downloaded(unpacked: try stream.finish(), blob: blob)  // only now: the digest verified
    }

    /// Downloads `layer` into the store unless it is there.
    /// - Returns: the blob's local path.
    /// - Throws: `FetchError.offline`; `RegistryError.digestMismatch` or `CacheError` (nothing is committed then);
    ///   registry errors.
    func blob(_ layer: Descriptor) throws -> String {
        if let path = store.path(for: layer.digest) { return path }
        guard let client else { throw LayerFetcher.FetchError.offline(layer.digest) }
        return try store.ensure(layer.digest, expectedSize: layer.size) { writer in
            try timed(layer) {
                try client.getBlob(repository: repository, digest: layer.digest, range: nil) { chunk in
                    try writer.write(chunk)
                }
            }
        }
    }

    /// Records the download of `layer` that `body` runs in the metrics.
    private func timed(_ layer: Descriptor, _ body: () throws -> Void) throws {
        let start = ContinuousClock.now
        try body()
        let elapsed = ContinuousClock.now - start
        metrics.fetched(
            bytes: layer.size,
            seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}
