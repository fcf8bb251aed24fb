import Foundation
import OCI

/// What a vLLM cache root says about itself beyond its files (docs/vllm.md): the cache keys vLLM computed, the
/// CPU its Inductor C++ kernels were built for, and the vLLM version that wrote it.
///
/// vLLM names a cache by a hash of everything that shapes the compiled code (config, `VLLM_*` variables, model path,
/// torch and device facts): `torch_compile_cache/<10 hex>/` (vLLM 0.9+) or, with AOT compile (vLLM 0.30+, the CPU
/// default), `torch_compile_cache/torch_aot_compile/<64 hex>/`. Those names are the keys; `torch_aot_compile` is not.
public enum VLLMCacheLayout {
    /// The directory below `torch_compile_cache/` that holds AOT-compile hash directories instead of being one.
    static let aotDirectory = "torch_aot_compile"

    /// The hash directory a cache path lies in (`torch_compile_cache/<h>/...` or
    /// `torch_compile_cache/torch_aot_compile/<h>/...`), as its name; nil for paths above any hash directory.
    public static func hash(ofPath path: String) -> String? {
        let parts = path.split(separator: "/")
        guard parts.count >= 2, parts[0] == "torch_compile_cache" else { return nil }
        if parts[1] == aotDirectory { return parts.count >= 3 ? String(parts[2]) : nil }
        return String(parts[1])
    }

    /// The hash directory names among `paths` (relative to the cache root), sorted, each once.
    static func hashes(in paths: [String]) -> [String] {
        Set(paths.compactMap(hash(ofPath:))).sorted()
    }

    /// The CPU targets of Inductor's C++ kernels among `files`: the vector ISA each `.so` was built for, read
    /// from the compiler command line GCC records in it (`-g1` keeps `GNU C++20 ... -mavx512f ...`; Inductor
    /// adds its ISA's flags to `-march=native`), else `fallback` (the pushing host's) when there are compiled
    /// C++ kernels (a `.so` beside its `.cpp`) that do not say. Reads at most `limit` bytes of each `.so`.
    static func cpuTargets(
        files: [CacheScan.File], root: String, fallback: @autoclosure () -> GPUTarget?, limit: Int = 16 << 20
    ) -> [GPUTarget] {
        var isas = Set<String>()
        let paths = Set(files.map(\.path))
        let compiledCPP = paths.contains { $0.hasSuffix(".cpp") && paths.contains($0.dropLast(4) + ".so") }
        for file in files {
            guard case .file = file.content, file.path.hasSuffix(".so"), hash(ofPath: file.path) != nil,
                let handle = FileHandle(forReadingAtPath: root + "/" + file.path)
            else { continue }
            defer { try? handle.close() }
            guard let data = try? handle.read(upToCount: limit) else { continue }
            for producer in producers(in: data) {
                if let isa = isa(compilerFlags: producer) { isas.insert(isa) }
            }
        }
        if isas.isEmpty, compiledCPP, let host = fallback() { return [host] }
        return isas.sorted().map { GPUTarget(backend: .cpu, arch: $0) }
    }

    /// The NUL-terminated `GNU C...` producer strings of an object file (DWARF `DW_AT_producer`).
    static func producers(in data: Data) -> [String] {
        let marker = Data("GNU C".utf8)
        var found: [String] = []
        var from = data.startIndex
        while found.count < 8, let range = data.range(of: marker, in: from..<data.endIndex) {
            let end = data[range.lowerBound...].firstIndex(of: 0) ?? data.endIndex
            found.append(String(decoding: data[range.lowerBound..<min(end, range.lowerBound + 8192)], as: UTF8.self))
            from = end
        }
        return found
    }

    /// Inductor's name (`torch/_inductor/cpu_vec_isa.py`) for the best vector ISA a compiler command line
    /// enables (a later `-mno-X` undoes an earlier `-mX`, as in GCC); nil when it enables none.
    static func isa(compilerFlags: String) -> String? {
        var enabled = Set<String>()
        for flag in compilerFlags.split(separator: " ") where flag.hasPrefix("-m") {
            if flag.hasPrefix("-mno-") {
                enabled.remove(String(flag.dropFirst(5)))
            } else {
                enabled.insert(String(flag.dropFirst(2)))
            }
        }
        if enabled.contains("amx-tile") { return "amx_tile" }
        if ["avx512f", "avx512dq", "avx512vl", "avx512bw"].allSatisfy(enabled.contains) { return "avx512" }
        if ["avx2", "fma"].allSatisfy(enabled.contains) { return "avx2" }
        return nil
    }

    /// The vector ISA Inductor picks on this host (its best one, as `cpu_vec_isa.pick_vec_isa` does), from the
    /// kernel's CPU flags: what a cache compiled here was built for when its files do not say.
    public static func hostCPUTarget(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))
        -> GPUTarget?
    {
        guard let cpuinfo else { return nil }
        let line = cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") || $0.hasPrefix("Features") }
        let flags = Set((line?.split(separator: ":").last ?? "").split(separator: " ").map(String.init))
        let isa: String?
        if flags.contains("amx_tile") {
            isa = "amx_tile"
        } else if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains) {
            isa = "avx512"
        } else if ["avx2", "fma"].allSatisfy(flags.contains) {
            isa = "avx2"
        } else if flags.contains("asimd") {
            isa = "asimd"
        } else {
            isa = nil
        }
        return isa.map { GPUTarget(backend: .cpu, arch: $0) }
    }
}
