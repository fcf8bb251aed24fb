import OCI
import Synchronization

/// What a layer's eStargz `toc.digest` annotation was found to be worth. One rule in every mode (stargz-snapshotter's):
/// a layer whose TOC matches is fetched by range; one whose TOC does not match, or cannot be read, is downloaded whole
/// and served, verified by the layer's own digest, and the image stays usable.
public enum TOCCheck: Sendable, Equatable, CustomStringConvertible {
    /// The TOC hashes to the annotation: the layer's files are fetched by range, each checked against it.
    case verified
    /// The annotation does not pin the layer's TOC (why, with the digests): served from the whole layer.
    case mismatch(String)

    public var description: String {
        switch self {
        case .verified: return "verified"
        case .mismatch(let why):
            return "mismatch: served from the whole layer verified by its digest (\(why); re-push the image with a "
                + "correct annotation to fetch it by range)"
        }
    }
}

/// Counters of what fetching cost and found, for status and metrics.
public final class FetchMetrics: Sendable {
    public struct Snapshot: Sendable, Codable, Hashable {
        public var bytesFetched: Int64 = 0
        public var blobsFetched = 0
        /// Range requests of eStargz layers (footer, TOC, file members); their bytes count in `bytesFetched`.
        public var rangeRequests = 0
        public var layerCacheHits = 0
        public var layerCacheMisses = 0
        public var verificationFailures = 0
        public var fetchErrors = 0
        public var lastErrors: [String] = []
        /// Seconds each layer download took (for the metrics endpoint's histogram).
        public var fetchSeconds = LatencyHistogram()

        public init() {}
    }

    /// Per-bucket (not cumulative) counts of durations; the last count is above every bound.
    public struct LatencyHistogram: Sendable, Codable, Hashable {
        public static let bounds: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
        public var counts = [Int](repeating: 0, count: LatencyHistogram.bounds.count + 1)
        public var sum: Double = 0

        public init() {}

        public mutating func observe(_ seconds: Double) {
            counts[Self.bounds.firstIndex { seconds <= $0 } ?? Self.bounds.count] += 1
            sum += seconds
        }
    }

    private let state = Mutex(Snapshot())
    private let observeFetch: @Sendable (Double) -> Void
    private let tocChecks = Mutex<[Digest: TOCCheck]>([:])

    /// - Parameter observeFetch: told each layer download's seconds as well (the metrics endpoint's histogram,
    ///   whose buckets live in its registry), outside the lock.
    public init(observeFetch: @escaping @Sendable (_ seconds: Double) -> Void = { _ in }) {
        self.observeFetch = observeFetch
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// What the `toc.digest` annotation of `layer` was found to be worth; nil before the layer is indexed, or
    /// without an annotation.
    public func tocCheck(of layer: Digest) -> TOCCheck? { tocChecks.withLock { $0[layer] } }

    func checkedTOC(of layer: Digest, _ check: TOCCheck) {
        tocChecks.withLock { $0[layer] = check }
    }

    func fetched(bytes: Int64, seconds: Double) {
        state.withLock {
            $0.bytesFetched += bytes
            $0.blobsFetched += 1
            $0.fetchSeconds.observe(seconds)
        }
        observeFetch(seconds)
    }

    func fetchedRange(bytes: Int64) {
        state.withLock {
            $0.bytesFetched += bytes
            $0.rangeRequests += 1
        }
    }

    func layerLookup(hit: Bool) {
        state.withLock {
            if hit {
                $0.layerCacheHits += 1
            } else {
                $0.layerCacheMisses += 1
            }
        }
    }

    func failed(_ error: any Error, verification: Bool) {
        state.withLock {
            if verification { $0.verificationFailures += 1 } else { $0.fetchErrors += 1 }
            $0.lastErrors.append(String(describing: error))
            if $0.lastErrors.count > 10 { $0.lastErrors.removeFirst() }
        }
    }
}
