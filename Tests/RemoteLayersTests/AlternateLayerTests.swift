import Foundation
import LayerArchive
import OCI
import Registry
import TestSupport
import Testing

@testable import RemoteLayers

/// A content two layers hold (a published image's kernel and the compaction that merged it) is fetched from the
/// first layer, and from the other once the first is gone from the registry: what a mount that pinned an image
/// whose tag compaction removed relies on.
@Suite struct AlternateLayerTests {
    let published: EStargzLayer
    let compaction: EStargzLayer
    let bench: FetchBench

    init() throws {
        let kernels = try KernelLayer(kernels: 2, metadataSize: 2 << 10, binarySize: 4 << 10)
        let mine = kernels.layer.files.filter { $0.key.hasPrefix("KEY0/") }
        published = try EStargzLayer(files: mine)
        var merged = kernels.layer.files
        merged["KEY9/add.json"] = noise(512, seed: 99)
        compaction = try EStargzLayer(files: merged)
        bench = try FetchBench([published, compaction])
    }

    func requests(of layer: EStargzLayer) -> Int {
        bench.registry.blobRequests.filter { $0.digest == layer.descriptor.digest }.count
    }

    @Test func aFileOfALayerTheRegistryNoLongerHasComesFromAnotherLayerHoldingIt() throws {
        let fetcher = try bench.fetcher()
        _ = try fetcher.index(of: published.descriptor)
        _ = try fetcher.index(of: compaction.descriptor)
        let gone = published.descriptor.digest
        bench.registry.inject { $0.digest == gone ? .status(404) : nil }
        bench.registry.resetLog()

        let path = "KEY0/add.cubin"
        #expect(try fetcher.contents(of: published.content(of: path)) == published.files[path])
        #expect(requests(of: published) == 1, "one 404 from the layer that is gone")
        #expect(requests(of: compaction) >= 1)

        // The gone layer is not asked again: the rest of the directory comes from the compaction straight away.
        bench.registry.resetLog()
        let sibling = "KEY0/__grp__add.json"
        #expect(try fetcher.contents(of: published.content(of: sibling)) == published.files[sibling])
        #expect(requests(of: published) == 0)
    }

    @Test func aFileNoOtherLayerHoldsFailsWithTheRegistrysAnswer() throws {
        let fetcher = try bench.fetcher()
        _ = try fetcher.index(of: compaction.descriptor)
        let gone = compaction.descriptor.digest
        bench.registry.inject { $0.digest == gone ? .status(404) : nil }
        #expect(throws: RegistryError.self) { try fetcher.contents(of: compaction.content(of: "KEY9/add.json")) }
    }

    @Test func locationsListLayersStillInTheRegistryFirst() throws {
        let index = { (layer: EStargzLayer) in
            try EStargz.index(
                layer: layer.descriptor.digest, toc: try JSONEncoder().encode(layer.toc), tocOffset: layer.tocOffset)
        }
        var map = RemoteFileMap.State()
        map.register(try index(published), layer: published.descriptor)
        map.register(try index(compaction), layer: compaction.descriptor)
        let content = published.content(of: "KEY0/add.cubin")
        #expect(
            map.locations(of: content).map(\.layer.digest) == [
                published.descriptor.digest, compaction.descriptor.digest,
            ])
        map.gone.insert(published.descriptor.digest)
        #expect(
            map.locations(of: content).map(\.layer.digest) == [
                compaction.descriptor.digest, published.descriptor.digest,
            ])
        // A content only one layer holds has one location.
        #expect(map.locations(of: compaction.content(of: "KEY9/add.json")).count == 1)
    }
}
