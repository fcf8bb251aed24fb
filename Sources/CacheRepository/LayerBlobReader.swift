import Dispatch
import Foundation
import OCI
import Registry
import Synchronization
import TimeBudget

/// Byte ranges of one layer blob in the registry, fetched with HTTP `Range` requests.
///
/// Wanted regions (an eStargz layer's gzip members) are planned into spans: neighbours closer than `coalesceGap`
/// share one request (the gap is downloaded and dropped), up to `maxSpan` bytes a request, and the spans of one read
/// are requested at once, so a directory's metadata run and its binaries cost one round trip. It holds no state
/// (single flight is `VerifyingReader`'s, keyed by file, so that waiters share verified bytes). Nothing here is
/// verified (a range has no digest of its own): `VerifyingReader` is the only caller that hands bytes on, and only
/// once they match their TOC digests. Failures propagate as they come; the registry client owns retries and time
/// budgets, and nothing here retries on top of them.
struct LayerBlobReader: Sendable {
    /// A byte range of the blob: one gzip member, or the footer, or the TOC.
    struct Region: Hashable, Sendable, Comparable {
        var offset: Int64
        var length: Int64
        var end: Int64 { offset + length }

        static func < (a: Region, b: Region) -> Bool { (a.offset, a.length) < (b.offset, b.length) }
    }

    /// Regions fetched by one request: `range` covers every region of it.
    struct Span: Hashable, Sendable {
        var range: Range<Int64>
        var regions: [Region]
    }

    /// Neighbouring members closer than this are fetched in one request.
    static let coalesceGap: Int64 = 256 << 10
    /// One request covers at most this many bytes (a single region larger than this is one request of its own).
    static let maxSpan: Int64 = 32 << 20

    var client: RegistryClient
    var repository: String
    var layer: Descriptor
    var metrics: FetchMetrics

    /// One request for `range`.
    /// - Throws: registry errors (a short body included).
    func read(_ range: Range<Int64>) throws -> Data {
        var data = Data()
        data.reserveCapacity(Int(range.count))
        try client.getBlob(repository: repository, digest: layer.digest, range: range) { data.append(contentsOf: $0) }
        metrics.fetchedRange(bytes: Int64(data.count))
        return data
    }

    /// The bytes of each region, its span's requests sent at once; a failed request fails its regions alone.
    func read(_ regions: some Collection<Region>) -> [Region: Result<Data, any Error>] {
        let spans = Self.spans(of: regions)
        let results = Mutex([Result<Data, any Error>?](repeating: nil, count: spans.count))
        // Each span under the caller's deadline, which does not follow work onto other threads by itself.
        let deadline = Deadline.current
        DispatchQueue.concurrentPerform(iterations: spans.count) { i in
            let result = Result { try Deadline.bind(deadline) { try read(spans[i].range) } }
            results.withLock { $0[i] = result }
        }
        var out: [Region: Result<Data, any Error>] = [:]
        out.reserveCapacity(regions.count)
        for (span, result) in zip(spans, results.withLock { $0 }) {
            for region in span.regions {
                out[region] = result!.map { data in
                    let lower = Int(region.offset - span.range.lowerBound)
                    return data.subdata(in: lower..<(lower + Int(region.length)))
                }
            }
        }
        return out
    }

    /// Regions in offset order, grouped into the spans one request each fetches (duplicates once).
    static func spans(
        of regions: some Collection<Region>, gap: Int64 = coalesceGap, cap: Int64 = maxSpan
    ) -> [Span] {
        var spans: [Span] = []
        for region in Set(regions).sorted() {
            if let last = spans.last, region.offset - last.range.upperBound <= gap,
                max(region.end, last.range.upperBound) - last.range.lowerBound <= cap
            {
                spans[spans.count - 1].range = last.range.lowerBound..<max(region.end, last.range.upperBound)
                spans[spans.count - 1].regions.append(region)
            } else {
                spans.append(Span(range: region.offset..<region.end, regions: [region]))
            }
        }
        return spans
    }
}
