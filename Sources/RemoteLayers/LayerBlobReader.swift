import Dispatch
import Foundation
import OCI
import Registry
import Synchronization
import TimeBudget

/// Byte ranges of one layer blob in the registry, fetched with HTTP `Range` requests.
///
/// Wanted regions (an eStargz layer's gzip members) are planned into spans: neighbours closer than `coalesceGap`
/// share a span (the gap is downloaded too), up to `maxSpan` bytes a span. Spans are then packed into multi-range
/// requests (`RegistryClient.getBlob(ranges:)`), up to `maxSpan` bytes and `maxRangesPerRequest` spans each, all sent
/// at once: members scattered over a layer (each kernel's metadata in a layer whose writer kept directories
/// together, as ctr-remote's does) cost a few round trips and none of the bytes between them. It holds no state
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

    /// Neighbouring members closer than this share a span: about what a part header of a multi-range answer costs,
    /// so a gap is bridged only where that is cheaper than a range of its own (round trips are shared anyway).
    static let coalesceGap: Int64 = 512
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
        var out: [Region: Result<Data, any Error>] = [:]
        out.reserveCapacity(regions.count)
        for (span, result) in readSpans(regions) {
            for region in span.regions { out[region] = result.map { Self.slice($0, of: span, region) } }
        }
        return out
    }

    /// One request for several ranges (disjoint, ascending).
    /// - Throws: registry errors.
    func read(_ ranges: [Range<Int64>]) throws -> [Data] {
        let parts = try client.getBlob(repository: repository, digest: layer.digest, ranges: ranges)
        metrics.fetchedRange(bytes: parts.reduce(Int64(0)) { $0 + Int64($1.count) })
        return parts
    }

    /// The spans of `regions` (bridging gaps up to `gap`), each with its bytes (which may hold more members than
    /// were asked for); a failed request fails its spans alone.
    func readSpans(
        _ regions: some Collection<Region>, gap: Int64 = coalesceGap
    ) -> [(span: Span, bytes: Result<Data, any Error>)] {
        let spans = Self.spans(of: regions, gap: gap)
        let requests = Self.requests(of: spans)
        let results = Mutex([Result<Data, any Error>?](repeating: nil, count: spans.count))
        // Each request under the caller's deadline, which does not follow work onto other threads by itself.
        let deadline = Deadline.current
        DispatchQueue.concurrentPerform(iterations: requests.count) { i in
            let members = requests[i]
            let outcome = Result { try Deadline.bind(deadline) { try read(members.map { spans[$0].range }) } }
            results.withLock { results in
                for (k, span) in members.enumerated() { results[span] = outcome.map { $0[k] } }
            }
        }
        return Array(zip(spans, results.withLock { $0 }.map { $0! }))
    }

    /// Spans (in offset order) packed into requests: indices of consecutive spans, at most `maxRangesPerRequest`
    /// and `maxSpan` bytes a request (a span larger than that alone).
    static func requests(of spans: [Span], cap: Int64 = maxSpan) -> [[Int]] {
        var requests: [[Int]] = []
        var bytes: Int64 = 0
        for (i, span) in spans.enumerated() {
            let size = Int64(span.range.count)
            if let last = requests.last, last.count < RegistryClient.maxRangesPerRequest, bytes + size <= cap {
                requests[requests.count - 1].append(i)
                bytes += size
            } else {
                requests.append([i])
                bytes = size
            }
        }
        return requests
    }

    /// The bytes of `region` out of its span's.
    static func slice(_ data: Data, of span: Span, _ region: Region) -> Data {
        let lower = Int(region.offset - span.range.lowerBound)
        return data.subdata(in: lower..<(lower + Int(region.length)))
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
