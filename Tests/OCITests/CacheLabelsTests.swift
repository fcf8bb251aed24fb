import OCI
import Testing

/// MCV's labels: which kind of cache an image holds and for which GPUs, read leniently.
@Suite struct CacheLabelsTests {
    @Test func theSummaryNamesTheTargetsWithArchAsText() {
        let labels = CacheLabels([
            CacheLabels.tritonSummary:
                #"{"targets":[{"backend":"cuda","arch":"90","warp_size":32},{"backend":"rocm","arch":"gfx942"}]}"#,
            CacheLabels.tritonEntryCount: "12", CacheLabels.genericCacheSize: "4096",
        ])
        #expect(labels.targets?.map(\.description) == ["cuda:90:32", "hip:gfx942"])
        #expect(labels.kinds == [.triton])
        #expect(labels.entryCount == 12 && labels.cacheSizeBytes == 4096)
    }

    @Test func anIntegerArchReadsAsTriton() throws {
        let labels = CacheLabels([CacheLabels.tritonSummary: #"{"targets":[{"backend":"cuda","arch":80}]}"#])
        #expect(labels.targets == [GPUTarget(backend: .cuda, arch: "80")])
    }

    @Test func anUnreadableSummaryIsNoSummaryNotAnError() {
        let labels = CacheLabels([CacheLabels.tritonSummary: "not json", CacheLabels.tritonEntryCount: "many"])
        #expect(labels.targets == nil && labels.entryCount == nil)
        #expect(labels.isCacheImage)  // the layer decides what is in it
    }

    @Test func kindsComeFromEitherLabelFamily() {
        #expect(CacheLabels([CacheLabels.vllmSummary: "{}"]).kinds == [.vllm])
        #expect(CacheLabels([CacheLabels.genericComponents: "triton, VLLM"]).kinds == [.triton, .vllm])
        #expect(CacheLabels([CacheLabels.genericType: "triton"]).kinds == [.triton])
        #expect(!CacheLabels(["org.opencontainers.image.title": "app"]).isCacheImage)
    }

    @Test(arguments: [
        ("sha256-" + String(repeating: "a", count: 64) + ".sig", true),
        ("sha256-" + String(repeating: "a", count: 64) + ".att", true),
        ("sha256-" + String(repeating: "a", count: 64), true),
        ("sha256-" + String(repeating: "a", count: 63) + ".sig", false),
        ("sha256-" + String(repeating: "g", count: 64), false),
        ("cuda-sm90", false),
    ])
    func cosignsOwnTagsAreNotCacheImages(_ tag: String, _ isCosign: Bool) {
        #expect(ArtifactTag.isCosign(tag) == isCosign)
    }
}
