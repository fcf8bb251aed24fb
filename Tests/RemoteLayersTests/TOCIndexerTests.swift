import Foundation
import LayerArchive
import OCI
import TestSupport
import Testing

@testable import RemoteLayers

@Suite struct TOCIndexerTests {
    let kernels: KernelLayer
    let bench: FetchBench

    init() throws {
        kernels = try KernelLayer()
        bench = try FetchBench([kernels.layer])
    }

    func reader(for layer: Descriptor? = nil) throws -> LayerBlobReader {
        try bench.reader().reader(for: layer ?? kernels.layer.descriptor)
    }

    var annotation: String { kernels.layer.descriptor.annotations![EStargz.tocDigestAnnotation]! }

    @Test func theFooterThenTheTOCAndNothingElse() throws {
        let indexer = TOCIndexer()
        let index = try indexer.index(annotation: annotation, reader: reader())
        let size = kernels.layer.descriptor.size
        #expect(
            bench.registry.ranges(of: kernels.layer.descriptor.digest) == [
                (size - 51)..<size, kernels.layer.tocOffset..<(size - 51),
            ])
        #expect(Set(index.entries.filter { $0.kind == .file }.map(\.path)) == Set(kernels.layer.files.keys))
        #expect(index.remote?.tocDigest.description == annotation)
        // Kept in memory only once asked to, and saved by `persist`.
        #expect(indexer.unsaved(index.layer) == nil)
        indexer.keep(index)
        #expect(indexer.unsaved(index.layer) == index)
        let indexes = try LayerIndexCache(store: bench.store)
        #expect(indexer.persist(into: indexes).isEmpty)
        #expect(indexer.unsaved(index.layer) == nil)
        #expect(indexes.load(layer: index.layer) == index)
    }

    @Test func aTOCOtherThanTheAnnotationsIsRefused() throws {
        let forged = "sha256:" + String(repeating: "0", count: 64)
        #expect(throws: LayerFetcher.FetchError.self) { try TOCIndexer().index(annotation: forged, reader: reader()) }
        #expect(throws: TarError.self) { try TOCIndexer().index(annotation: "md5:abc", reader: reader()) }
    }

    @Test func aBlobThatIsNoEStargzIsRefused() throws {
        let plain = Data(repeating: 7, count: 4096)
        let descriptor = Descriptor(mediaType: MediaType.ociLayerGzip, digest: sha256(plain), size: 4096)
        bench.registry.add(plain, as: descriptor.digest)
        #expect(throws: TarError.self) {
            try TOCIndexer().index(annotation: annotation, reader: reader(for: descriptor))
        }
        let tiny = Descriptor(mediaType: MediaType.ociLayerGzip, digest: sha256(Data([1])), size: 20)
        #expect(throws: TarError.self) { try TOCIndexer().index(annotation: annotation, reader: reader(for: tiny)) }
    }
}
