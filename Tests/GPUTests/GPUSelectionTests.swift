import Foundation
import OCI
import Testing

@testable import GPU

private func target(_ text: String) throws -> GPUTarget { try GPUTarget(parsing: text) }

private let nothing = GPUDetector(
    environment: [:], kfdTopologyRoot: "/nonexistent/mcvfs-tests/kfd", nvmlLibrary: absentNVML)

@Suite("--gpu selection")
struct GPUSelectionTests {
    @Test("parsing: auto, all, targets, rocm, commas, repeats, normalisation")
    func parsing() throws {
        #expect(try GPUSelection(parsing: []) == .auto)
        #expect(try GPUSelection(parsing: ["auto"]) == .auto)
        #expect(try GPUSelection(parsing: ["ALL"]) == .all)
        #expect(try GPUSelection(parsing: ["cuda:90", "all"]) == .all)
        #expect(
            try GPUSelection(parsing: ["cuda:90", "rocm:gfx942:64,cuda:80"])
                == .targets([target("cuda:90"), target("hip:gfx942:64"), target("cuda:80")]))
        #expect(
            try GPUSelection(parsing: ["cuda:sm90", "cuda:sm_80:32", "hip:GFX90A"])
                == .targets([target("cuda:90"), target("cuda:80:32"), target("hip:gfx90a")]))
        #expect(try GPUSelection(parsing: ["cuda:90", "cuda:90"]) == .targets([target("cuda:90")]))
    }

    @Test(
        "malformed values are rejected with the offending text",
        arguments: [
            [""], ["cuda"], ["metal:1"], ["cuda:90:0"], ["cuda:gfx942"], ["auto", "cuda:90"], [",,"],
        ])
    func malformed(values: [String]) {
        #expect(throws: GPUError.self) { try GPUSelection(parsing: values) }
    }

    @Test("cuda:90 accepts cuda:90:32 but not cuda:80 or hip")
    func cudaMatching() throws {
        let resolved = try GPUSelection(parsing: ["cuda:90"]).resolve(detector: nothing)
        #expect(resolved.accepts(try target("cuda:90:32")))
        #expect(resolved.accepts(try target("cuda:90")))
        #expect(!resolved.accepts(try target("cuda:80:32")))
        #expect(!resolved.accepts(try target("hip:90:32")))
    }

    @Test("rocm:gfx942 is hip:gfx942 and accepts hip:gfx942:64")
    func rocmAlias() throws {
        let selection = try GPUSelection(parsing: ["rocm:gfx942"])
        #expect(selection == .targets([GPUTarget(backend: .hip, arch: "gfx942")]))
        let resolved = try selection.resolve(detector: nothing)
        #expect(resolved.accepts(try target("hip:gfx942:64")))
        #expect(!resolved.accepts(try target("hip:gfx90a:64")))
    }

    @Test("a known warp size must agree")
    func warpMismatch() throws {
        let resolved = try GPUSelection(parsing: ["hip:gfx1100:32"]).resolve(detector: nothing)
        #expect(resolved.accepts(try target("hip:gfx1100:32")))
        #expect(!resolved.accepts(try target("hip:gfx1100:64")))
        #expect(resolved.accepts(try target("hip:gfx1100")))
    }

    @Test("all accepts everything, including images with no known target")
    func all() throws {
        let resolved = try GPUSelection.all.resolve(detector: nothing)
        #expect(resolved.accepts(try target("cuda:75:32")))
        #expect(resolved.accepts(anyOf: []))
    }

    @Test("accepts(anyOf:) needs one accepted target; an image with none is rejected")
    func anyOf() throws {
        let resolved = try GPUSelection(parsing: ["cuda:90"]).resolve(detector: nothing)
        #expect(resolved.accepts(anyOf: [try target("cuda:80:32"), try target("cuda:90:32")]))
        #expect(!resolved.accepts(anyOf: [try target("cuda:80:32"), try target("hip:gfx942:64")]))
        #expect(!resolved.accepts(anyOf: []))
    }

    @Test("auto uses the detected targets")
    func autoDetected() throws {
        let detector = GPUDetector(
            environment: [:], kfdTopologyRoot: try Fixtures.kfdRoot("mi300x"), nvmlLibrary: absentNVML)
        let resolved = try GPUSelection.auto.resolve(detector: detector)
        #expect(resolved == ResolvedSelection(scope: .targets([try target("hip:gfx942:64")])))
        #expect(resolved.accepts(try target("hip:gfx942:64")))
        #expect(!resolved.accepts(try target("hip:gfx942:32")))
    }

    @Test("auto with no GPU throws noGPUFound whose text suggests --gpu cuda:90")
    func autoNothing() throws {
        #expect(throws: GPUError.noGPUFound(problems: [])) { try GPUSelection.auto.resolve(detector: nothing) }
        let text = GPUError.noGPUFound(problems: []).description
        #expect(text.contains("--gpu cuda:90"))
        #expect(text.contains("--gpu all"))
    }

    @Test("auto with no GPU carries the detection problems into the error")
    func autoNothingWithProblems() throws {
        let detector = GPUDetector(
            environment: [:], kfdTopologyRoot: "/nonexistent/mcvfs-tests", nvmlLibrary: "libc.so.6")
        let problem = GPUError.nvmlSymbolMissing(library: "libc.so.6", symbol: "nvmlInit_v2")
        #expect(throws: GPUError.noGPUFound(problems: [problem])) { try GPUSelection.auto.resolve(detector: detector) }
        #expect(GPUError.noGPUFound(problems: [problem]).description.contains("nvmlInit_v2"))
    }

    @Test("explicit targets never consult the detector, so they work on a GPU-less build host")
    func explicitNeedsNoGPU() throws {
        let resolved = try GPUSelection(parsing: ["cuda:80"]).resolve(detector: nothing)
        #expect(resolved.scope == .targets([try target("cuda:80")]))
    }

    @Test("MCVFS_GPU drives auto: targets, or all")
    func environment() throws {
        let fromTargets = GPUDetector(
            environment: ["MCVFS_GPU": "cuda:80"], kfdTopologyRoot: try Fixtures.kfdRoot("mi300x"),
            nvmlLibrary: absentNVML)
        #expect(try GPUSelection.auto.resolve(detector: fromTargets).scope == .targets([try target("cuda:80")]))
        let everything = GPUDetector(
            environment: ["MCVFS_GPU": "all"], kfdTopologyRoot: "/nonexistent", nvmlLibrary: absentNVML)
        #expect(try GPUSelection.auto.resolve(detector: everything).scope == .all)
        // An explicit --gpu wins over the environment.
        #expect(
            try GPUSelection(parsing: ["hip:gfx90a"]).resolve(detector: everything).scope
                == .targets([try target("hip:gfx90a")]))
    }
}
