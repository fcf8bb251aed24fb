import Foundation
import OCI
import Testing

@testable import GPU

/// Drives the real dlopen/dlsym/@convention(c) code against a fake NVML compiled from `Fixtures/fake-nvml` with the
/// toolchain's clang (every Swift toolchain ships one), so the path is tested without an NVIDIA GPU.
@Suite("NVML through dlopen")
struct NVMLTests {
    /// Builds the fake library for `mode` into `dir`; fails the test if no C compiler is found.
    private func buildFake(mode: Int, in dir: URL) throws -> String {
        let source = try Fixtures.url("fake-nvml/fake_nvml.c").path
        let output = dir.appending(path: "libnvidia-ml-fake\(mode).so").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["clang", "-shared", "-fPIC", "-DFAKE_MODE=\(mode)", "-o", output, source]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "clang could not build the fake NVML")
        return output
    }

    private func detect(nvml: String) throws -> GPUDetector.Detection {
        try GPUDetector(environment: [:], kfdTopologyRoot: "/nonexistent/mcvfs-tests/kfd", nvmlLibrary: nvml).detect()
    }

    @Test("nine devices (8x 9.0, 1x 8.0) are cuda:90:32 then cuda:80:32, in index order")
    func capabilities() throws {
        try Fixtures.withTemporaryDirectory { dir in
            let detection = try detect(nvml: buildFake(mode: 1, in: dir))
            #expect(detection.problems.isEmpty)
            #expect(
                detection.targets == [
                    GPUTarget(backend: .cuda, arch: "90", warpSize: 32),
                    GPUTarget(backend: .cuda, arch: "80", warpSize: 32),
                ])
        }
    }

    @Test("nvmlInit_v2 failing is a problem value worded by nvmlErrorString")
    func initFails() throws {
        try Fixtures.withTemporaryDirectory { dir in
            let detection = try detect(nvml: buildFake(mode: 2, in: dir))
            #expect(detection.targets.isEmpty)
            #expect(
                detection.problems == [
                    .nvmlCallFailed(function: "nvmlInit_v2", code: 9, message: "Driver Not Loaded")
                ])
            #expect(detection.problems[0].description == "nvmlInit_v2 failed: Driver Not Loaded (nvmlReturn_t 9)")
        }
    }

    @Test("a lost device is skipped with a problem; the other is reported")
    func deviceFails() throws {
        try Fixtures.withTemporaryDirectory { dir in
            let detection = try detect(nvml: buildFake(mode: 3, in: dir))
            #expect(detection.targets == [GPUTarget(backend: .cuda, arch: "89", warpSize: 32)])
            #expect(
                detection.problems == [
                    .nvmlCallFailed(function: "nvmlDeviceGetCudaComputeCapability(1)", code: 15, message: "GPU is lost")
                ])
        }
    }
}
