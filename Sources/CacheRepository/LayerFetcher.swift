import BlobCache
import Foundation
import OCI
import Registry
import Synchronization
import TarIndex

/// Gets a layer's index: from disk when it was built before, else by downloading the blob (streamed into the
/// store, which verifies it before committing) and indexing it. One download per digest at a time in this
/// process; the store's ingest lock covers other processes.
public final class LayerFetcher: Sendable {
    private let client: RegistryClient?
    private let repository: String
    private let store: DirectoryBlobStore
    private let indexes: LayerIndexCache
    public let metrics: FetchMetrics
    private let flights = Mutex<[Digest: NSLock]>([:])

    /// - Parameter client: nil when offline: only what is already local can be served.
    public init(client: RegistryClient?, repository: String, store: DirectoryBlobStore, metrics: FetchMetrics) throws {
        self.client = client
        self.repository = repository
        self.store = store
        self.indexes = try LayerIndexCache(store: store)
        self.metrics = metrics
    }

    public enum FetchError: Error, Equatable, CustomStringConvertible {
        case offline(Digest)

        public var description: String {
            switch self {
            case .offline(let digest): return "layer \(digest.short) is not in the local cache and mcvfs is offline"
            }
        }
    }

    public func index(of layer: Descriptor) throws -> LayerIndex {
        if let index = indexes.load(layer: layer.digest) {
            metrics.layerLookup(hit: true)
            return index
        }
        let gate = flights.withLock { $0[layer.digest, default: NSLock()] }
        gate.lock()
        defer { gate.unlock() }
        if let index = indexes.load(layer: layer.digest) {
            metrics.layerLookup(hit: true)
            return index
        }
        metrics.layerLookup(hit: false)
        do {
            let blob = try fetchBlob(layer)
            return try indexes.build(layer: layer.digest, blobPath: blob, mediaType: layer.mediaType)
        } catch {
            metrics.failed(error, verification: Self.isVerificationFailure(error))
            throw error
        }
    }

    /// Downloads `layer` into the store unless it is there; returns its local path.
    @discardableResult
    public func fetchBlob(_ layer: Descriptor) throws -> String {
        if let path = store.path(for: layer.digest) { return path }
        guard let client else { throw FetchError.offline(layer.digest) }
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

    public func path(of content: Digest) -> String? { store.path(for: content) }

    static func isVerificationFailure(_ error: any Error) -> Bool {
        switch error {
        case RegistryError.digestMismatch, CacheError.digestMismatch, is TarError: return true
        default: return false
        }
    }
}
