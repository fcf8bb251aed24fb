import BlobCache
import Foundation
import LayerArchive
import OCI
import Registry
import TestSupport
import Testing

@testable import RemoteLayers

@Suite struct LayerFetcherTests {
    let kernels: KernelLayer
    let bench: FetchBench
    var descriptor: Descriptor { kernels.layer.descriptor }

    init() throws {
        kernels = try KernelLayer()
        bench = try FetchBench([kernels.layer])
    }

    func ranges() -> [Range<Int64>] { bench.registry.ranges(of: descriptor.digest) }

    func spans(of key: String) -> [Range<Int64>] {
        let regions = kernels.paths(of: key).flatMap { kernels.layer.members(of: $0) }.map {
            LayerBlobReader.Region(offset: $0.lowerBound, length: Int64($0.count))
        }
        return LayerBlobReader.spans(of: regions).map(\.range)
    }

    @Test func aFirstReadFetchesTheTOCThenItsDirectoryAndNothingTwice() throws {
        let fetcher = try bench.fetcher()
        let index = try fetcher.index(of: descriptor)
        #expect(ranges().count == 2, "footer and TOC")
        let first = kernels.paths(of: "KEY1")[0]
        guard case .held(let data) = try fetcher.fetch(kernels.layer.content(of: first)) else {
            Issue.record("a first read should be served from memory")
            return
        }
        #expect(data == kernels.layer.files[first])
        #expect(Set(ranges().dropFirst(2)) == Set(spans(of: "KEY1")))
        // The rest of the directory came with it; reading all of it again costs nothing.
        bench.registry.resetLog()
        for path in kernels.paths(of: "KEY1") {
            #expect(try fetcher.contents(of: kernels.layer.content(of: path)) == kernels.layer.files[path])
        }
        #expect(bench.registry.blobRequests.isEmpty)
        #expect(index.entries.contains { $0.path == first })
        #expect(fetcher.flightsInAir == 0)
    }

    @Test func concurrentReadsOfOneDirectoryAndOneLayerShareTheirFetches() throws {
        let (kernels, descriptor) = (kernels, descriptor)
        let fetcher = try bench.fetcher()
        let paths = kernels.paths(of: "KEY0")
        let wrong = Counter()
        concurrently(24) { i in
            do {
                _ = try fetcher.index(of: descriptor)
                let path = paths[i % paths.count]
                if try fetcher.contents(of: kernels.layer.content(of: path)) != kernels.layer.files[path] {
                    wrong.increment()
                }
            } catch { wrong.increment() }
        }
        #expect(wrong.count == 0)
        // One footer, one TOC, the directory's spans: whatever the interleaving, nothing was fetched twice.
        #expect(ranges().count == 2 + spans(of: "KEY0").count, "\(ranges())")
        #expect(fetcher.flightsInAir == 0)
        #expect(bench.metrics.snapshot.layerCacheMisses == 1)
        #expect(bench.metrics.snapshot.layerCacheHits == 23)
    }

    @Test func aCorruptedMemberFailsThatFileAloneAndNothingOfItIsKept() throws {
        let victimPath = "KEY0/add.cubin"
        let victim = kernels.layer.members(of: victimPath)[0]
        var blob = kernels.layer.blob
        for i in Int(victim.lowerBound) + 40..<Int(victim.lowerBound) + 240 { blob[i] ^= 0x5A }
        bench.registry.add(blob, as: descriptor.digest)
        let fetcher = try bench.fetcher()
        _ = try fetcher.index(of: descriptor)
        let content = kernels.layer.content(of: victimPath)
        #expect(throws: (any Error).self) { try fetcher.fetch(content) }
        #expect(throws: (any Error).self) { try fetcher.materialize(content) }  // refused again, not half-kept
        for path in kernels.paths(of: "KEY0") where path != victimPath {
            #expect(try fetcher.contents(of: kernels.layer.content(of: path)) == kernels.layer.files[path])
        }
        fetcher.persistPrefetched()
        #expect(!bench.store.contains(content))
        #expect(bench.store.contains(kernels.layer.content(of: "KEY0/add.json")))
        #expect(bench.metrics.snapshot.verificationFailures == 2)
        #expect(fetcher.flightsInAir == 0)
    }

    @Test func materializeCommitsAndASecondFetcherNeedsNoRegistry() throws {
        let fetcher = try bench.fetcher()
        _ = try fetcher.index(of: descriptor)
        let path = try fetcher.materialize(kernels.layer.content(of: "KEY2/add.cubin"))
        #expect(FileManager.default.contents(atPath: path) == kernels.layer.files["KEY2/add.cubin"])
        fetcher.prefetch(kernels.layer.files.keys.map { kernels.layer.content(of: $0) })
        fetcher.persistPrefetched()

        // Offline, over the same store: the persisted index and every committed file serve; nothing else does.
        let offline = try bench.fetcher(online: false)
        bench.registry.resetLog()
        _ = try offline.index(of: descriptor)
        for (path, data) in kernels.layer.files {
            #expect(try offline.contents(of: kernels.layer.content(of: path)) == data, "\(path)")
        }
        #expect(bench.registry.blobRequests.isEmpty)
    }

    @Test func aFetchPastTheMemoryBoundIsStoredBeforeItReturns() throws {
        let memory = MemoryBlobCache(store: bench.store, maxBytes: 64 << 10, commitDelay: .seconds(3600))
        let fetcher = try bench.fetcher(memory: memory)
        _ = try fetcher.index(of: descriptor)
        // KEY0's files hold more than the bound: the fetch commits them itself instead of holding them.
        _ = try fetcher.fetch(kernels.layer.content(of: "KEY0/add.cubin"))
        #expect(memory.heldBytes <= 64 << 10)
        #expect(kernels.paths(of: "KEY0").allSatisfy { bench.store.contains(kernels.layer.content(of: $0)) })
    }

    @Test func anOfflineFetcherServesOnlyWhatIsLocal() throws {
        let offline = try bench.fetcher(online: false)
        #expect(throws: LayerFetcher.FetchError.offline(descriptor.digest)) { try offline.index(of: descriptor) }
        #expect(throws: LayerFetcher.FetchError.self) { try offline.fetchBlob(descriptor) }
        let unknown = sha256(Data("not in any layer".utf8))
        #expect(throws: LayerFetcher.FetchError.unknownContent(unknown)) { try offline.fetch(unknown) }
        offline.prefetch([unknown])
        #expect(bench.registry.blobRequests.isEmpty)
    }

    @Test func prefetchHoldsMetadataUntilPersisted() throws {
        let fetcher = try bench.fetcher()
        _ = try fetcher.index(of: descriptor)
        let metadata = kernels.layer.files.keys.filter { $0.hasSuffix(".json") }.map { kernels.layer.content(of: $0) }
        fetcher.prefetch(metadata)
        // All the metadata in one run of the blob: one request, after footer and TOC.
        #expect(ranges().count == 3)
        for content in metadata {
            guard case .held = try fetcher.fetch(content) else {
                Issue.record("prefetched metadata should be served from memory")
                return
            }
        }
        #expect(!metadata.contains { bench.store.contains($0) })
        fetcher.persistPrefetched()
        #expect(metadata.allSatisfy { bench.store.contains($0) })
        #expect(try LayerIndexCache(store: bench.store).load(layer: descriptor.digest) != nil)
    }

    @Test func aFailingTOCFetchIsSharedAndNotRetriedHere() throws {
        let gate = InMemoryRegistry.Gate()
        bench.registry.inject { _ in .hold(gate) }
        bench.registry.inject { _ in .status(503) }
        let descriptor = descriptor
        let fetcher = try bench.fetcher()
        let failures = Counter()
        let all = DispatchGroup()
        for _ in 0..<8 {
            spawn(in: all) {
                do { _ = try fetcher.index(of: descriptor) } catch { failures.increment() }
            }
        }
        // One footer request is out; the seven other callers wait for its flight instead of sending their own.
        #expect(eventually { gate.held == 1 && fetcher.waitingOnFlights == 7 })
        gate.open()
        all.wait()
        #expect(failures.count == 8)
        #expect(bench.registry.blobRequests.count == 1)
        #expect(fetcher.flightsInAir == 0)
        // Nothing is remembered of the failure.
        bench.registry.clearFaults()
        #expect(try fetcher.index(of: descriptor).layer == descriptor.digest)
    }

    @Test func aWholeLayerIsDownloadedOnceAndIndexed() throws {
        let fetcher = try bench.fetcher(lazy: false)
        let descriptor = descriptor
        concurrently(4) { _ in _ = try? fetcher.index(of: descriptor) }
        let whole = bench.registry.blobRequests.filter { $0.digest == descriptor.digest && $0.range == nil }
        #expect(whole.count == 1)
        #expect(ranges().isEmpty)
        // Unpacked as it arrived into its pack, and the blob kept beside it.
        #expect(bench.store.packPath(for: descriptor.digest) != nil)
        #expect(bench.store.contains(descriptor.digest))
        for (path, data) in kernels.layer.files {
            let content = kernels.layer.content(of: path)
            guard case .mapped(let region) = try fetcher.fetch(content) else {
                Issue.record("an unpacked layer's files are in its pack")
                return
            }
            #expect(Data(region.bytes) == data)
        }
        #expect(bench.metrics.snapshot.blobsFetched == 1)
    }

    @Test func aCorruptWholeLayerIsNeverCommitted() throws {
        var blob = kernels.layer.blob
        blob[blob.count / 2] ^= 1
        bench.registry.add(blob, as: descriptor.digest)
        let fetcher = try bench.fetcher(lazy: false)
        // Whichever check sees it first: the gzip member's CRC while unpacking, or the layer digest at the end.
        let error = #expect(throws: (any Error).self) { try fetcher.index(of: descriptor) }
        #expect(error is RegistryError || error is TarError, "\(String(describing: error))")
        #expect(!bench.store.contains(descriptor.digest))
        #expect(bench.store.packPath(for: descriptor.digest) == nil)
        #expect(bench.metrics.snapshot.verificationFailures == 1)
    }

    @Test func aLargeFileStreamsIntoTheStore() throws {
        let big = noise(200 << 10, seed: 5)
        let layer = try EStargzLayer(
            files: ["KEY/big.cubin": big, "KEY/add.json": Data("{}".utf8)], chunkSize: 64 << 10)
        let bench = try FetchBench([layer])
        let fetcher = try bench.fetcher()
        _ = try fetcher.index(of: layer.descriptor)
        guard case .stored(let path) = try fetcher.fetch(layer.content(of: "KEY/big.cubin")) else {
            Issue.record("a file of several members goes to the store")
            return
        }
        #expect(FileManager.default.contents(atPath: path) == big)
    }
}
