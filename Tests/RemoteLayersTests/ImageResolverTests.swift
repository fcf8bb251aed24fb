import BlobCache
import ContentHash
import Foundation
import OCI
import Registry
import RemoteLayers
import TestSupport
import Testing

/// `ImageResolver` over an in-memory registry: which images of a reference a host uses, which it skips and why,
/// and what it reads to decide (manifests and configs, never layers).
@Suite struct ImageResolverTests {
    static let cuda90 = #"{"targets":[{"backend":"cuda","arch":"90","warp_size":32}]}"#
    static let hip942 = #"{"targets":[{"backend":"hip","arch":"gfx942","warp_size":64}]}"#
    static let layer = (data: Data("a layer".utf8), mediaType: MediaType.ociLayerGzip)

    let registry = InMemoryRegistry()
    let directory: TemporaryDirectory
    let store: DirectoryBlobStore

    init() throws {
        directory = try TemporaryDirectory()
        store = try DirectoryBlobStore(layout: CacheLayout(root: directory.path))
    }

    @discardableResult
    func push(_ tag: String?, summary: String? = ImageResolverTests.cuda90, labels extra: [String: String] = [:])
        throws -> Descriptor
    {
        var labels = extra
        if let summary { labels[CacheLabels.tritonSummary] = summary }
        return try registry.pushImage(repository: "org/cache", tag: tag, labels: labels, layers: [Self.layer])
    }

    func resolve(_ text: String, accepting target: String = "cuda:90") throws -> Catalog {
        let wanted = try GPUTarget(parsing: target)
        return try ImageResolver(client: try registry.client(), store: store)
            .catalog(
                for: try ImageReference(parsing: text), accepts: { $0.matches(wanted) }, selectionDescription: target)
    }

    @Test func aRepositoryIsItsCacheTagsInNameOrderEachUsedOrSkippedWithItsReason() throws {
        let sm90 = try push("cuda-sm90")
        try push("rocm-gfx942", summary: Self.hip942)
        try push("plain", summary: nil)
        let cosign = "sha256-" + String(repeating: "ab", count: 32) + ".sig"
        registry.putManifest(Data("{}".utf8), mediaType: MediaType.ociManifest, repository: "org/cache", tag: cosign)

        let catalog = try resolve("registry.test/org/cache")
        #expect(catalog.entries.map(\.name) == ["cuda-sm90", "plain", "rocm-gfx942", cosign])
        #expect(catalog.repository == "registry.test/org/cache")
        #expect(catalog.used.map(\.digest) == [sm90.digest])
        #expect(catalog.used.first?.layers.map(\.digest) == [SHA256Hasher.digest(Self.layer.data)])
        let reasons = Dictionary(uniqueKeysWithValues: catalog.skipped.map { ($0.name, $0.skipReason ?? "") })
        #expect(reasons["plain"]?.hasPrefix("no cache labels") == true)
        #expect(reasons["rocm-gfx942"] == "targets hip:gfx942:64 do not match the selected GPUs (cuda:90)")
        #expect(reasons[cosign] == "signature or attestation tag, not a cache image")
        // The cosign tag is skipped by name: its manifest is never read.
        #expect(!registry.paths.contains("/v2/org/cache/manifests/\(cosign)"))
        #expect(!registry.paths.contains { $0.contains("/blobs/\(SHA256Hasher.digest(Self.layer.data))") })
    }

    @Test func configsAreKeptSoAWarmResolutionReadsOnlyManifests() throws {
        try push("cuda-sm90")
        _ = try resolve("registry.test/org/cache:cuda-sm90")
        let configReads = registry.paths.filter { $0.contains("/blobs/") }
        #expect(configReads.count == 1)
        _ = try resolve("registry.test/org/cache:cuda-sm90")
        #expect(registry.paths.filter { $0.contains("/blobs/") } == configReads)
    }

    @Test func anIndexIsReadAsItsManifestsInOrder() throws {
        let sm90 = try push(nil)
        let gfx942 = try push(nil, summary: Self.hip942)
        let index = try JSONSerialization.data(withJSONObject: [
            "schemaVersion": 2, "mediaType": MediaType.ociIndex,
            "manifests": [sm90, gfx942].map {
                ["mediaType": $0.mediaType, "digest": $0.digest.description, "size": $0.size] as [String: Any]
            },
        ])
        let listed = registry.putManifest(index, mediaType: MediaType.ociIndex, repository: "org/cache", tag: "multi")

        let catalog = try resolve("registry.test/org/cache:multi", accepting: "hip:gfx942")
        #expect(catalog.entries.map(\.name) == ["multi[0]", "multi[1]"])
        #expect(catalog.entries.map(\.indexDigest) == [listed.digest, listed.digest])
        #expect(catalog.used.map(\.digest) == [gfx942.digest])
        #expect(catalog.used.map(\.name) == ["multi[1]"])
    }

    @Test func aDigestNamesTheImageByItsDigest() throws {
        let pinned = try push("cuda-sm90")
        let catalog = try resolve("registry.test/org/cache@\(pinned.digest)")
        #expect(catalog.entries.map(\.name) == [pinned.digest.description])
        #expect(catalog.used.map(\.digest) == [pinned.digest])
    }

    @Test func anImageWithoutTheSummaryIsUsedAndFilteredKernelByKernel() throws {
        try push("vllm", summary: nil, labels: [CacheLabels.vllmEntryCount: "3"])
        let catalog = try resolve("registry.test/org/cache")
        #expect(catalog.used.map(\.name) == ["vllm"])
        #expect(catalog.entries.first?.targets == nil)
        #expect(catalog.entries.first?.kinds == [.vllm])
    }

    @Test func layersOfAnotherMediaTypeAndCosignArtifactsAreSkipped() throws {
        try registry.pushImage(
            repository: "org/cache", tag: "foreign", labels: [CacheLabels.tritonSummary: Self.cuda90],
            layers: [(Data("x".utf8), "application/vnd.example.blob")])
        try registry.pushImage(
            repository: "org/cache", tag: "signed", labels: [CacheLabels.tritonSummary: Self.cuda90],
            layers: [(Data("{}".utf8), MediaType.cosignSimpleSigning)])
        let reasons = try resolve("registry.test/org/cache").skipped.map(\.skipReason)
        #expect(reasons.count == 2)
        #expect(reasons[0]?.contains("unsupported media type application/vnd.example.blob") == true)
        #expect(reasons[1] == "cosign artifact, not a cache image")
    }

    @Test func aListedTagWhoseManifestIsGoneIsSkipped() throws {
        try push("cuda-sm90")
        try push("gone")
        registry.script { request in
            request.url.path.hasSuffix("/manifests/gone") ? .error(404, code: "MANIFEST_UNKNOWN") : nil
        }
        let catalog = try resolve("registry.test/org/cache")
        #expect(catalog.used.map(\.name) == ["cuda-sm90"])
        #expect(catalog.skipped.map(\.name) == ["gone"])
        #expect(catalog.skipped.first?.skipReason?.hasPrefix("manifest unusable") == true)
        #expect(catalog.skipped.first?.digest == nil)
    }

    @Test func anUnreachableRegistryFailsTheResolutionRatherThanSkipping() throws {
        try push("cuda-sm90")
        registry.script { _ in .error(503) }
        #expect {
            try resolve("registry.test/org/cache")
        } throws: { error in
            (error as? RegistryError)?.isTransient == true
        }
    }
}
