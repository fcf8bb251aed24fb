import Synchronization

/// Counters of what fetching cost and found, for status and metrics.
public final class FetchMetrics: Sendable {
    public struct Snapshot: Sendable, Codable, Hashable {
        public var bytesFetched: Int64 = 0
        public var blobsFetched = 0
        public var layerCacheHits = 0
        public var layerCacheMisses = 0
        public var verificationFailures = 0
        public var fetchErrors = 0
        public var lastErrors: [String] = []
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func fetched(bytes: Int64) {
        state.withLock {
            $0.bytesFetched += bytes
            $0.blobsFetched += 1
        }
    }

    func layerLookup(hit: Bool) {
        state.withLock { hit ? ($0.layerCacheHits += 1) : ($0.layerCacheMisses += 1) }
    }

    func failed(_ error: any Error, verification: Bool) {
        state.withLock {
            if verification { $0.verificationFailures += 1 } else { $0.fetchErrors += 1 }
            $0.lastErrors.append(String(describing: error))
            if $0.lastErrors.count > 10 { $0.lastErrors.removeFirst() }
        }
    }
}
