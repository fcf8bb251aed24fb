import Foundation
import OCI
import Testing

@testable import GPU

@Suite("Triton kernel JSON")
struct KernelMetadataTests {
    @Test("Triton 3.9.0 CUDA kernel (H100): integer arch, options arch sm90")
    func cuda90() throws {
        let metadata = try KernelMetadata(json: Fixtures.data("kernels/cuda-90-add_kernel.json"))
        #expect(metadata.target == GPUTarget(backend: .cuda, arch: "90", warpSize: 32))
        #expect(metadata.name == "add_kernel")
        #expect(metadata.hash == "e5b50311f741228290db83b4abb71a4bbbe81c73064a4bd92c7e50d2b0625dc2")
        #expect(metadata.tritonVersion == "3.9.0")
        #expect(metadata.optionsArch == "sm90")
        #expect(metadata.numWarps == 4)
        #expect(metadata.numStages == 3)
        #expect(metadata.numCTAs == 1)
        #expect(metadata.ptxVersion == nil)
        #expect(metadata.debug == false)
    }

    @Test("Triton 3.9.0 HIP kernel (MI300X): string arch")
    func hipGfx942() throws {
        let metadata = try KernelMetadata(json: Fixtures.data("kernels/hip-gfx942-add_kernel.json"))
        #expect(metadata.target == GPUTarget(backend: .hip, arch: "gfx942", warpSize: 64))
        #expect(metadata.tritonVersion == "3.9.0")
        #expect(metadata.optionsArch == "gfx942")
        #expect(metadata.numStages == 2)
    }

    @Test("MCV example built with Triton 3.2.0 on gfx90a")
    func mcvRocm() throws {
        let metadata = try KernelMetadata(json: Fixtures.data("kernels/mcv-rocm-gfx90a-add_kernel.json"))
        #expect(metadata.target == GPUTarget(backend: .hip, arch: "gfx90a", warpSize: 64))
        #expect(metadata.tritonVersion == "3.2.0")
        #expect(metadata.hash == "6088b9b2e5149e06670bcec5bb3df8c56758f20ec349dd5f77f1507fe7cdf5fa")
    }

    @Test("selection applied to real kernels")
    func selectionOnKernels() throws {
        let cuda = try KernelMetadata(json: Fixtures.data("kernels/cuda-90-add_kernel.json")).target
        let hip = try KernelMetadata(json: Fixtures.data("kernels/hip-gfx942-add_kernel.json")).target
        let h100 = ResolvedSelection(scope: .targets([GPUTarget(backend: .cuda, arch: "90")]))
        #expect(h100.accepts(cuda))
        #expect(!h100.accepts(hip))
        let mi300x = try GPUSelection(parsing: ["rocm:gfx942"]).resolve(detector: GPUDetector(environment: [:]))
        #expect(mi300x.accepts(hip))
        #expect(!mi300x.accepts(cuda))
    }

    @Test("minimal and tolerant: optional keys absent or null, extra keys ignored")
    func minimal() throws {
        let json =
            #"{"hash":"h","target":{"backend":"rocm","arch":"gfx1100","warp_size":32},"name":"k","#
            + #""num_warps":null,"new_key_from_triton_4":{"x":[1,2]},"arch":80}"#
        let metadata = try KernelMetadata(json: Data(json.utf8))
        #expect(metadata.target == GPUTarget(backend: .hip, arch: "gfx1100", warpSize: 32))
        #expect(metadata.tritonVersion == nil)
        #expect(metadata.numWarps == nil)
        #expect(metadata.optionsArch == "80")
    }

    @Test("missing target or broken JSON is MalformedError naming the problem")
    func malformed() throws {
        #expect(throws: KernelMetadata.MalformedError.missingKey("target")) {
            try KernelMetadata(json: Data(#"{"hash":"h","name":"k"}"#.utf8))
        }
        #expect(
            KernelMetadata.MalformedError.missingKey("target.arch").description
                == "malformed Triton kernel metadata: missing key 'target.arch'")
        #expect(
            KernelMetadata.MalformedError.invalid(at: "num_warps", detail: "not a number").description
                == "malformed Triton kernel metadata: num_warps: not a number")
        #expect(throws: KernelMetadata.MalformedError.self) { try KernelMetadata(json: Data("{".utf8)) }
        #expect(throws: KernelMetadata.MalformedError.self) {
            try KernelMetadata(json: Data(#"{"hash":"h","name":"k","target":{"backend":"metal","arch":1}}"#.utf8))
        }
    }

    /// Every kernel JSON in the shared fixtures (Tests/Fixtures), found from this file's location.
    @Test("every non-group kernel JSON in Tests/Fixtures decodes, with a target that names its directory")
    func allSharedFixtures() throws {
        let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appending(path: "Fixtures")
        let enumerator = try #require(FileManager.default.enumerator(atPath: shared.path))
        var count = 0
        for case let relative as String in enumerator
        where relative.hasSuffix(".json") && !(relative as NSString).lastPathComponent.hasPrefix("__grp__")
            && !relative.contains("/tmp.") && (relative.contains("triton") || relative.contains("vector-add"))
        {
            let data = try Data(contentsOf: shared.appending(path: relative))
            guard (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["target"] != nil else { continue }
            let metadata = try KernelMetadata(json: data)
            count += 1
            if relative.hasPrefix("triton-3.9.0/") {
                let dir = relative.split(separator: "/")[1]  // cuda-80, cuda-90, hip-gfx942
                #expect("\(metadata.target.backend.rawValue)-\(metadata.target.arch)" == dir, "\(relative)")
                #expect(metadata.tritonVersion == "3.9.0")
            }
        }
        #expect(count >= 20)
    }
}
