import Foundation
import OCI
import Registry
import TestSupport
import Testing

@testable import RemoteLayers

@Suite struct SpanPlanTests {
    typealias Region = LayerBlobReader.Region

    @Test func neighboursWithinTheGapShareASpan() {
        let regions = [
            Region(offset: 300, length: 50), Region(offset: 0, length: 100), Region(offset: 100, length: 150),
        ]
        let spans = LayerBlobReader.spans(of: regions, gap: 50, cap: 1000)
        #expect(spans.map(\.range) == [0..<350])
        #expect(spans[0].regions == [Region(offset: 0, length: 100), regions[2], regions[0]])
    }

    @Test func aGapWiderThanTheLimitSplits() {
        let regions = [Region(offset: 0, length: 100), Region(offset: 151, length: 10), Region(offset: 200, length: 5)]
        let spans = LayerBlobReader.spans(of: regions, gap: 50, cap: 1000)
        #expect(spans.map(\.range) == [0..<100, 151..<205])
    }

    @Test func theCapBoundsEverySpanButARegionLargerThanIt() {
        let regions =
            (0..<10).map { Region(offset: Int64($0) * 100, length: 100) } + [Region(offset: 1000, length: 900)]
        let spans = LayerBlobReader.spans(of: regions, gap: 1000, cap: 300)
        #expect(spans.map(\.range) == [0..<300, 300..<600, 600..<900, 900..<1000, 1000..<1900])
        #expect(spans.dropLast().allSatisfy { $0.range.count <= 300 })
        #expect(spans.flatMap(\.regions).count == regions.count)
    }

    @Test func duplicatesAreFetchedOnce() {
        let region = Region(offset: 10, length: 10)
        let spans = LayerBlobReader.spans(of: [region, region, region])
        #expect(spans.count == 1)
        #expect(spans[0].regions == [region])
    }

    @Test func theDefaultsAreTheREADMEs() {
        #expect(LayerBlobReader.coalesceGap == 512)
        #expect(LayerBlobReader.maxSpan == 32 << 20)
        #expect(LayerBlobReader.spans(of: [Region]()).isEmpty)
    }
}

@Suite struct LayerBlobReaderTests {
    let kernels: KernelLayer
    let bench: FetchBench

    init() throws {
        kernels = try KernelLayer()
        bench = try FetchBench([kernels.layer])
    }

    func regions(of key: String) -> [LayerBlobReader.Region] {
        kernels.paths(of: key).flatMap { kernels.layer.members(of: $0) }.map {
            LayerBlobReader.Region(offset: $0.lowerBound, length: Int64($0.count))
        }
    }

    func reader() throws -> LayerBlobReader {
        try bench.reader().reader(for: kernels.layer.descriptor)
    }

    @Test func aDirectorysTwoRunsAreOneMultiRangeRequest() throws {
        let gate = InMemoryRegistry.Gate()
        bench.registry.inject { _ in .hold(gate) }
        let wanted = regions(of: "KEY0")
        let expected = LayerBlobReader.spans(of: wanted)
        #expect(expected.count == 2, "the fixture should place the metadata run and the binary apart")
        let reader = try reader()
        let kernels = kernels
        let done = Counter()
        spawn(in: DispatchGroup()) {
            let read = reader.read(wanted)
            let blob = kernels.layer.blob
            if read.count == wanted.count,
                read.allSatisfy({ (try? $0.value.get()) == blob.subdata(in: Int($0.key.offset)..<Int($0.key.end)) })
            {
                done.increment()
            }
        }
        // Both runs in one request: one round trip, and none of the bytes between them.
        #expect(eventually { gate.held == 1 })
        gate.open()
        #expect(eventually { done.count == 1 })
        #expect(Set(bench.registry.ranges(of: kernels.layer.descriptor.digest)) == Set(expected.map(\.range)))
        #expect(bench.metrics.snapshot.rangeRequests == 1)
        #expect(bench.metrics.snapshot.bytesFetched == expected.reduce(0) { $0 + Int64($1.range.count) })
    }

    @Test func aFailedRequestFailsItsRegionsAlone() throws {
        let wanted = regions(of: "KEY0") + regions(of: "KEY1")
        let first = regions(of: "KEY0")
        bench.registry.inject { $0.ranges.count > 1 ? .status(500) : nil }
        let read = try reader().read(first)
        for region in first { #expect(throws: RegistryError.self) { try read[region]?.get() } }
        // The client was told not to retry, and nothing here retries: one request.
        #expect(bench.registry.requests.count == 1)
        bench.registry.clearFaults()
        let again = try reader().read(wanted)
        #expect(wanted.allSatisfy { (try? again[$0]?.get()) != nil })
    }

    @Test func spansArePackedIntoRequestsUpToTheRangeAndByteCaps() {
        let spans = (0..<300).map {
            LayerBlobReader.Span(range: Int64($0) * 100..<(Int64($0) * 100 + 10), regions: [])
        }
        #expect(LayerBlobReader.requests(of: spans).map(\.count) == [256, 44])
        #expect(LayerBlobReader.requests(of: Array(spans.prefix(10)), cap: 30).map(\.count) == [3, 3, 3, 1])
    }

    @Test func aShortBodyIsAnError() throws {
        let reader = try reader()
        let size = kernels.layer.descriptor.size
        #expect(throws: (any Error).self) { try reader.read((size - 10)..<(size + 10)) }
    }
}
