import Foundation
import OCI
import Testing

/// A catalog: every image a reference names, used or skipped, kept as JSON for offline remounts.
@Suite struct CatalogTests {
    static func digest(_ c: Character) -> Digest { try! Digest(hex: String(repeating: c, count: 64)) }

    static let catalog = Catalog(
        repository: "localhost:5000/org/cache", reference: "localhost:5000/org/cache",
        entries: [
            Catalog.Entry(
                name: "cuda-sm90", digest: digest("a"), mediaType: MediaType.ociManifest,
                image: CacheImage(
                    name: "cuda-sm90", digest: digest("a"),
                    layers: [Descriptor(mediaType: MediaType.ociLayerGzip, digest: digest("b"), size: 70)],
                    labels: [CacheLabels.tritonSummary: #"{"targets":[{"backend":"cuda","arch":"90"}]}"#]),
                kinds: [.triton], targets: [GPUTarget(backend: .cuda, arch: "90")], skipReason: nil),
            Catalog.Entry(
                name: "rocm-gfx942", digest: digest("c"), mediaType: MediaType.ociManifest,
                image: CacheImage(name: "rocm-gfx942", digest: digest("c"), layers: [], labels: [:]),
                kinds: [.triton], targets: [GPUTarget(backend: .hip, arch: "gfx942")],
                skipReason: "targets hip:gfx942 do not match"),
            Catalog.Entry(
                name: "plain", digest: nil, mediaType: nil, image: nil, kinds: [], targets: nil,
                skipReason: "no cache labels"),
        ])

    @Test func usedImagesAreThoseWithAnImageAndNoReason() {
        #expect(Self.catalog.used.map(\.name) == ["cuda-sm90"])
        #expect(Self.catalog.skipped.map(\.name) == ["rocm-gfx942", "plain"])
        #expect(Self.catalog.used.first?.size == 70)
        #expect(Self.catalog.used.first?.targets == [GPUTarget(backend: .cuda, arch: "90")])
    }

    @Test func aRecordedCatalogReadsBackUnchanged() throws {
        let data = try JSONEncoder().encode(Self.catalog)
        #expect(try JSONDecoder().decode(Catalog.self, from: data) == Self.catalog)
    }

    @Test func recordsWithoutTheLaterFieldsStillRead() throws {
        // Catalogs recorded before indexDigest and signedBy existed.
        let json = #"""
            {"repository":"r","reference":"r","entries":[{"name":"t","kinds":["triton"],"skipReason":"x"}]}
            """#
        let catalog = try JSONDecoder().decode(Catalog.self, from: Data(json.utf8))
        #expect(catalog.entries.first?.indexDigest == nil && catalog.entries.first?.signedBy == nil)
        #expect(catalog.skipped.map(\.skipReason) == ["x"])
    }
}
