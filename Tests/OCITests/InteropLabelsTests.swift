import Foundation
import OCI
import Testing

/// The labels of other tools (GKM's MCV for KServe) and mcvfs's own Triton version label, as mcvfs reads them.
@Suite struct InteropLabelsTests {
    @Test(arguments: [
        (["io.kserve.km/framework": "vllm"], [CacheLabels.Kind.vllm]),
        (["io.kserve.km/cache-type": "torch-compile"], [.vllm]),
        (["io.kserve.km/framework": "Triton "], [.triton]),
        (["io.kserve.km/cache-type": "habana-recipe"], []),
        (["cache.triton.image/summary": "{}", "io.kserve.km/framework": "vllm"], [.triton, .vllm]),
    ])
    func kindsComeFromKServeLabelsToo(_ labels: [String: String], _ kinds: [CacheLabels.Kind]) {
        #expect(CacheLabels(labels).kinds == Set(kinds))
    }

    @Test func anImageOfAnotherFrameworkIsUnservableWithItsReason() {
        let habana = CacheLabels([
            "io.kserve.km/framework": "habana", "io.kserve.km/cache-type": "habana-recipe",
            "io.kserve.km/cache-root-env": "PT_HPU_RECIPE_CACHE_CONFIG=/home/kserve/.cache/habana,false,8192",
        ])
        #expect(habana.unservableReason == "io.kserve.km/framework is habana: not a Triton or vLLM cache")
        #expect(habana.captureRoot?.variable == "PT_HPU_RECIPE_CACHE_CONFIG")
        #expect(habana.captureRoot?.path == "/home/kserve/.cache/habana")  // the tunables after the comma are not
        #expect(CacheLabels(["io.kserve.km/framework": "vllm"]).unservableReason == nil)
        #expect(CacheLabels(["cache.triton.image/summary": "{}"]).unservableReason == nil)
    }

    @Test(arguments: [
        ("VLLM_CACHE_ROOT=/home/kserve/.cache/vllm", "VLLM_CACHE_ROOT", "/home/kserve/.cache/vllm"),
        ("TRITON_CACHE_DIR=/opt/app-root/src/.triton/cache", "TRITON_CACHE_DIR", "/opt/app-root/src/.triton/cache"),
        ("=/x", nil, nil), ("1X=/x", nil, nil), ("VLLM_CACHE_ROOT=relative", nil, nil), ("no-equals", nil, nil),
    ])
    func captureRootIsAVariableAndAnAbsolutePath(_ text: String, _ variable: String?, _ path: String?) {
        let root = CacheLabels(["io.kserve.km/cache-root-env": text]).captureRoot
        #expect(root?.variable == variable)
        #expect(root?.path == path)
    }

    @Test func aMountSubpathOutsideThePayloadIsIgnored() {
        #expect(CacheLabels(["io.kserve.km/cache-mount-subpath": "torch_compile_cache"]).mountSubpath != nil)
        for bad in ["../etc", "/abs", "a/../../b", ""] {
            #expect(CacheLabels(["io.kserve.km/cache-mount-subpath": bad]).mountSubpath == nil, "\(bad)")
        }
    }

    @Test func consumerEnvironmentPointsEachTreesVariableIntoTheConsumerRoot() {
        let vllm = CacheLabels([
            "io.kserve.km/framework": "vllm", "io.kserve.km/cache-root-env": "VLLM_CACHE_ROOT=/tmp/vllm",
            "io.kserve.km/cache-mounts": """
            [{"subPath":"triton","absPath":"/tmp/triton","env":"TRITON_CACHE_DIR","requiresWritable":true},
             {"subPath":"../escape","absPath":"/x","env":"EVIL"},
             {"subPath":"flashinfer","absPath":"/tmp/.cache/flashinfer"}]
            """,
        ])
        let environment = vllm.consumerEnvironment(root: "/cache/vllm")
        #expect(environment.map(\.name) == ["VLLM_CACHE_ROOT", "TRITON_CACHE_DIR"])
        #expect(environment.map(\.value) == ["/cache/vllm", "/cache/vllm/triton"])
        let triton = CacheLabels(["cache.triton.image/summary": "{}"]).consumerEnvironment(root: "/c")
        #expect(triton.map(\.name) == ["TRITON_CACHE_DIR"] && triton.map(\.value) == ["/c"])
        #expect(CacheLabels(["io.kserve.km/cache-mounts": "not json"]).consumerEnvironment(root: "/c").isEmpty)
    }

    @Test func tritonVersionsAreACommaSeparatedSet() {
        #expect(CacheLabels(["model.cache.image/triton-version": "3.9.0"]).tritonVersions == ["3.9.0"])
        #expect(CacheLabels(["model.cache.image/triton-version": "3.8.0, 3.9.0"]).tritonVersions == ["3.8.0", "3.9.0"])
        #expect(CacheLabels(["model.cache.image/triton-version": " , "]).tritonVersions == nil)
        #expect(CacheLabels([:]).tritonVersions == nil)
    }

    @Test func vllmFormatsAreListed() {
        #expect(CacheLabels(["cache.vllm.image/format": "binary,triton"]).vllmFormats == ["binary", "triton"])
        #expect(CacheLabels([:]).vllmFormats.isEmpty)
    }

    @Test(arguments: [
        MediaType.legacyTritonLayer, MediaType.legacyVLLMLayer, "application/vnd.cache.triton.content.layer.v1+triton",
        MediaType.ociLayerGzip, MediaType.dockerLayerGzip,
    ])
    func mcvsLegacyCacheLayersAreTarLayers(_ type: String) {
        #expect(MediaType.isTarLayer(type))
    }

    @Test func otherArtifactLayersAreNot() {
        #expect(!MediaType.isTarLayer("application/vnd.module.wasm.content.layer.v1+wasm"))
        #expect(!MediaType.isTarLayer(MediaType.cosignSimpleSigning))
    }
}

@Suite struct TritonVersionSelectionTests {
    static let digest = Digest(bytes: [UInt8](repeating: 0xab, count: 32))

    static func entry(_ name: String, version: String?, skip: String? = nil) -> Catalog.Entry {
        var labels = ["cache.triton.image/summary": #"{"targets":[]}"#]
        labels["model.cache.image/triton-version"] = version
        let image = CacheImage(name: name, digest: digest, layers: [], labels: labels)
        return Catalog.Entry(
            name: name, digest: digest, mediaType: MediaType.ociManifest, image: image, kinds: [.triton],
            targets: [], skipReason: skip)
    }

    @Test func onlyImagesOfThatVersionAndThoseThatDoNotSayStayUsed() {
        var catalog = Catalog(
            repository: "r/c", reference: "r/c",
            entries: [
                Self.entry("a", version: "3.9.0"), Self.entry("b", version: "3.8.0"), Self.entry("c", version: nil),
                Self.entry("d", version: "3.8.0,3.9.0"), Self.entry("e", version: "3.8.0", skip: "other GPUs"),
            ])
        catalog.keepOnly(tritonVersion: "3.9.0")
        #expect(catalog.entries.filter(\.isUsed).map(\.name) == ["a", "c", "d"])
        #expect(catalog.entries[1].skipReason == "compiled by Triton 3.8.0, not 3.9.0 (--triton-version)")
        #expect(catalog.entries[4].skipReason == "other GPUs", "an earlier reason is kept")
    }
}
