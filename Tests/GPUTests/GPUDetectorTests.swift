import Foundation
import OCI
import Testing

@testable import GPU

/// A detector that sees only what the test gives it.
private func detector(_ host: String? = nil, _ environment: [String: String] = [:], nvml: String = absentNVML) throws
    -> GPUDetector
{
    let root = try host.map { try Fixtures.kfdRoot($0) } ?? "/nonexistent/mcvfs-tests/kfd"
    return GPUDetector(environment: environment, kfdTopologyRoot: root, nvmlLibrary: nvml)
}

private let mi300x = GPUTarget(backend: .hip, arch: "gfx942", warpSize: 64)
private let rx7900 = GPUTarget(backend: .hip, arch: "gfx1100", warpSize: 32)
private let mi250x = GPUTarget(backend: .hip, arch: "gfx90a", warpSize: 64)

@Suite("GPU detection")
struct GPUDetectorTests {
    @Test("eight MI300X nodes are one target hip:gfx942:64")
    func mi300x8() throws {
        let detection = try detector("mi300x").detect()
        #expect(detection == .init(targets: [mi300x], problems: [], source: .hardware))
    }

    @Test(
        "RX 7900 XTX reports hip:gfx1100:32, MI250X hip:gfx90a:64", arguments: [("rx7900", rx7900), ("mi250x", mi250x)])
    func singleKinds(host: String, expected: GPUTarget) throws {
        #expect(try detector(host).detect().targets == [expected])
    }

    @Test("a host with only a CPU node and no NVML has no GPU")
    func cpuOnly() throws {
        let detection = try detector("cpu-only").detect()
        #expect(detection.targets.isEmpty)
        #expect(detection.problems.isEmpty)
    }

    @Test("missing NVML library means no NVIDIA GPU: empty list, no problem")
    func missingNVML() throws {
        let detection = try detector(nil, nvml: absentNVML).detect()
        #expect(detection == .init(targets: [], problems: [], source: .hardware))
    }

    @Test("a library that is not NVML is a problem value, not a crash")
    func notNVML() throws {
        let detection = try detector("rx7900", nvml: "libc.so.6").detect()
        #expect(detection.targets == [rx7900])
        #expect(detection.problems == [.nvmlSymbolMissing(library: "libc.so.6", symbol: "nvmlInit_v2")])
    }

    @Test("a file that is not a shared object is a load problem")
    func corruptNVML() throws {
        try Fixtures.withTemporaryDirectory { dir in
            let path = dir.appending(path: "libnvidia-ml.so.1").path
            try Data("not an ELF file\n".utf8).write(to: URL(fileURLWithPath: path))
            let detection = try detector(nil, nvml: path).detect()
            #expect(detection.targets.isEmpty)
            guard case .nvmlLoadFailed(let library, let reason)? = detection.problems.first else {
                Issue.record("expected nvmlLoadFailed, got \(detection.problems)")
                return
            }
            #expect(library == path)
            #expect(!reason.isEmpty)
        }
    }

    @Test("wave size falls back by family when the node omits it")
    func waveFallback() throws {
        try Fixtures.withTemporaryDirectory { dir in
            let root = try Fixtures.writeTopology(
                [
                    ("0", "gfx_target_version 0\n"), ("1", "gfx_target_version 90010\n"),
                    ("2", "gfx_target_version 100300\nwave_front_size 0\n"),
                ], in: dir)
            let detection = try GPUDetector(environment: [:], kfdTopologyRoot: root, nvmlLibrary: absentNVML).detect()
            #expect(detection.targets == [mi250x, GPUTarget(backend: .hip, arch: "gfx1030", warpSize: 32)])
        }
    }

    @Test("an unnamable gfx version is a problem; other nodes still count")
    func unnamableNode() throws {
        try Fixtures.withTemporaryDirectory { dir in
            let root = try Fixtures.writeTopology(
                [
                    ("1", "gfx_target_version 91700\nwave_front_size 64\n"),
                    ("2", "gfx_target_version 90402\nwave_front_size 64\n"),
                ], in: dir)
            let detection = try GPUDetector(environment: [:], kfdTopologyRoot: root, nvmlLibrary: absentNVML).detect()
            #expect(detection.targets == [mi300x])
            #expect(detection.problems == [.unnamableGFXVersion(node: "1", version: 91700)])
        }
    }

    @Test("distinct keeps the first of each target in order")
    func distinct() {
        let a100 = GPUTarget(backend: .cuda, arch: "80", warpSize: 32)
        let h100 = GPUTarget(backend: .cuda, arch: "90", warpSize: 32)
        #expect(GPUDetector.distinct([h100, a100, h100, h100, a100, mi300x]) == [h100, a100, mi300x])
    }

    // MARK: overrides

    @Test(
        "HSA_OVERRIDE_GFX_VERSION renames every AMD GPU, keeping its wave size",
        arguments: [("9.4.2", "gfx942"), ("10.3.0", "gfx1030"), ("9.0.10", "gfx90a"), ("11.0.0", "gfx1100")])
    func hsaOverride(value: String, arch: String) throws {
        let detection = try detector("rx7900", ["HSA_OVERRIDE_GFX_VERSION": value]).detect()
        #expect(detection.targets == [GPUTarget(backend: .hip, arch: arch, warpSize: 32)])
    }

    @Test(
        "malformed HSA_OVERRIDE_GFX_VERSION is a configuration error", arguments: ["9.4", "gfx942", "9.4.x", "9.16.0"])
    func badHSAOverride(value: String) throws {
        #expect(throws: GPUError.self) { try detector("rx7900", ["HSA_OVERRIDE_GFX_VERSION": value]).detect() }
    }

    @Test("TRITON_OVERRIDE_ARCH=gfx… becomes the HIP arch (target features after ':' dropped), over HSA's")
    func tritonOverrideHIP() throws {
        let env = ["TRITON_OVERRIDE_ARCH": "gfx90a:sramecc+:xnack-", "HSA_OVERRIDE_GFX_VERSION": "9.4.2"]
        #expect(try detector("mi300x", env).detect().targets == [mi250x])
    }

    @Test("TRITON_OVERRIDE_ARCH=sm… is CUDA's compile option only: HIP targets and detection are unchanged")
    func tritonOverrideCUDAForm() throws {
        #expect(try detector("mi300x", ["TRITON_OVERRIDE_ARCH": "sm80"]).detect().targets == [mi300x])
        let cuda = try TritonArchOverride("sm90")
        #expect(cuda.cudaCapability == 90 && cuda.hipArch == nil)
        let none = try TritonArchOverride(nil)
        #expect(none.cudaCapability == nil && none.hipArch == nil)
    }

    @Test(
        "malformed TRITON_OVERRIDE_ARCH is rejected as Triton would",
        arguments: ["sm90a", "sm_90", "90", "cuda:90", "sm"])
    func badTritonOverride(value: String) throws {
        #expect(
            throws: GPUError.invalidOverride(
                variable: "TRITON_OVERRIDE_ARCH", value: value,
                expected: "sm<capability> for CUDA (e.g. sm90) or gfx<processor> for ROCm (e.g. gfx942)")
        ) {
            try detector("mi300x", ["TRITON_OVERRIDE_ARCH": value]).detect()
        }
    }

    // MARK: MCVFS_GPU

    @Test("MCVFS_GPU replaces detection entirely, in --gpu syntax")
    func environmentTargets() throws {
        let env = ["MCVFS_GPU": "cuda:90, rocm:gfx942:64,cuda:90", "HSA_OVERRIDE_GFX_VERSION": "10.3.0"]
        let detection = try detector("rx7900", env).detect()
        #expect(detection.targets == [GPUTarget(backend: .cuda, arch: "90"), mi300x])
        #expect(detection.source == .environment("cuda:90, rocm:gfx942:64,cuda:90"))
    }

    @Test("MCVFS_GPU=auto or blank detects as usual")
    func environmentAuto() throws {
        #expect(try detector("rx7900", ["MCVFS_GPU": "auto"]).detect().targets == [rx7900])
        #expect(try detector("rx7900", ["MCVFS_GPU": "  "]).detect().targets == [rx7900])
    }

    @Test("malformed MCVFS_GPU is a configuration error")
    func environmentMalformed() throws {
        #expect(throws: GPUError.self) { try detector("rx7900", ["MCVFS_GPU": "cuda"]).detect() }
        #expect(throws: GPUError.self) { try detector("rx7900", ["MCVFS_GPU": "all"]).detect() }
    }

    /// Runs only where the person running the tests says what the machine has, e.g.
    /// `MCVFS_TEST_EXPECT_GPUS=cuda:90:32 swift test --filter GPUTests` on an H100/H200 host.
    @Test(
        "real hardware matches MCVFS_TEST_EXPECT_GPUS",
        .enabled(if: ProcessInfo.processInfo.environment["MCVFS_TEST_EXPECT_GPUS"] != nil))
    func realHardware() throws {
        let expected = try #require(ProcessInfo.processInfo.environment["MCVFS_TEST_EXPECT_GPUS"])
        let detection = try GPUDetector(environment: [:]).detect()
        #expect(detection.problems.isEmpty, "\(detection.problems)")
        #expect(detection.targets.map(\.description).joined(separator: ",") == expected)
    }
}
