import Foundation
import GPU
import OCI

/// The metadata Model Cache Vault (MCV) puts in and on a cache image (docs/mcv-images.md), so images mcvfs pushes are
/// read by MCV as its own and vice versa: `io.triton.manifest/manifest.json` (or `io.vllm.manifest/`) in the layer,
/// and the `cache.triton.image/*`, `cache.vllm.image/*` and `model.cache.image/*` config labels.
///
/// Everything is encoded with sorted keys and entries in a fixed order: these bytes are part of the image digest.
public enum MCVMetadata {
    /// One entry of MCV's Triton manifest (MCV's `TritonCacheMetadata`): arch as a string, as MCV writes it.
    public struct TritonEntry: Codable, Sendable, Hashable {
        public var hash: String
        public var backend: String
        public var arch: String
        public var warpSize: Int?
        public var ptxVersion: Int?
        public var numStages: Int?
        public var numWarps: Int?
        public var debug: Bool

        enum CodingKeys: String, CodingKey {
            case hash, backend, arch, debug
            case warpSize = "warp_size"
            case ptxVersion = "ptx_version"
            case numStages = "num_stages"
            case numWarps = "num_warps"
        }

        public init(_ metadata: KernelMetadata) {
            hash = metadata.hash
            backend = metadata.target.backend.rawValue
            arch = metadata.target.arch
            warpSize = metadata.target.warpSize
            ptxVersion = metadata.ptxVersion
            numStages = metadata.numStages
            numWarps = metadata.numWarps
            debug = metadata.debug ?? false
        }
    }

    /// One entry of MCV's vLLM manifest: a `torch_compile_cache/<hash>` and the Triton kernels below it.
    public struct VLLMEntry: Codable, Sendable, Hashable {
        public var vllmHash: String
        public var tritonCacheEntries: [TritonEntry]

        enum CodingKeys: String, CodingKey {
            case vllmHash
            case tritonCacheEntries = "TritonCacheEntries"
        }
    }

    /// The summary label's value: `{"targets":[{"arch":"90","backend":"cuda","warp_size":32}]}`.
    public struct Summary: Codable, Sendable, Hashable {
        public struct Target: Codable, Sendable, Hashable {
            public var backend: String
            public var arch: String
            public var warpSize: Int?

            enum CodingKeys: String, CodingKey {
                case backend, arch
                case warpSize = "warp_size"
            }
        }

        public var targets: [Target]

        public init(_ targets: [GPUTarget]) {
            self.targets = targets.map { Target(backend: $0.backend.rawValue, arch: $0.arch, warpSize: $0.warpSize) }
        }
    }

    static func encode<T: Encodable>(_ value: T, pretty: Bool = false) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting =
            pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
        // Only plain structs of strings, numbers and arrays are encoded here: this cannot fail.
        return try! encoder.encode(value)
    }

    /// `manifest.json` for the kernels of `scan` restricted to `kernels` (a split image's share).
    public static func manifest(kind: CacheScan.Kind, kernels: [CacheScan.Kernel], vllmHashes: [String]) -> Data {
        switch kind {
        case .triton:
            return encode(["triton": kernels.map { TritonEntry($0.metadata) }], pretty: true)
        case .vllm:
            let entries = vllmHashes.map { hash in
                VLLMEntry(
                    vllmHash: hash,
                    tritonCacheEntries: kernels.filter { VLLMCacheLayout.hash(ofPath: $0.directory) == hash }
                        .map { TritonEntry($0.metadata) })
            }
            return encode(["vllm": entries], pretty: true)
        }
    }

    /// The config labels MCV writes, for an image holding `kernels` and `cacheSizeBytes` bytes of cache files, with
    /// the KServe labels GKM's MCV adds and the Triton versions of the kernels.
    /// - Parameters:
    ///   - targets: what the image's compiled code runs on (its kernels' targets, and a vLLM cache's CPU ISA).
    ///   - files: the image's share of the scanned cache, whose group files tell where the cache was captured.
    ///   - root: the scanned directory the files' paths are relative to.
    ///   - vllmVersion: the vLLM that wrote a vLLM cache, when known.
    public static func labels(
        kind: CacheScan.Kind, kernels: [CacheScan.Kernel], targets: [GPUTarget], vllmHashes: [String],
        cacheSizeBytes: Int64, files: [CacheScan.File], root: String, vllmVersion: String? = nil
    ) -> [String: String] {
        let summary = String(decoding: encode(Summary(targets)), as: UTF8.self)
        let size = String(cacheSizeBytes)
        var labels: [String: String] = [
            CacheLabels.genericType: kind.rawValue,
            CacheLabels.genericComponents: kind.rawValue,
            CacheLabels.genericCacheSize: size,
            CacheLabels.genericSummary: summary,
            CacheLabels.kserveFramework: kind.rawValue,
        ]
        if let versions = tritonVersions(kernels) { labels[CacheLabels.tritonVersion] = versions }
        let capture = captureRoot(files: files, root: root)
        switch kind {
        case .triton:
            labels[CacheLabels.genericEntryCount] = String(kernels.count)
            labels[CacheLabels.tritonSummary] = summary
            labels[CacheLabels.tritonEntryCount] = String(kernels.count)
            labels[CacheLabels.tritonCacheSize] = size
            labels[CacheLabels.tritonVariant] = "multi"
            labels[CacheLabels.kserveCacheType] = "triton"
            labels[CacheLabels.kserveMountSubpath] = "."
            if let capture { labels[CacheLabels.kserveRootEnv] = "TRITON_CACHE_DIR=\(capture)" }
        case .vllm:
            labels[CacheLabels.genericEntryCount] = String(vllmHashes.count)
            labels[CacheLabels.vllmEntryCount] = String(vllmHashes.count)
            labels["cache.vllm.image/cache-size-bytes"] = size
            labels[CacheLabels.vllmSummary] = summary
            labels[CacheLabels.kserveCacheType] = "torch-compile"
            labels[CacheLabels.kserveMountSubpath] = "torch_compile_cache"
            if !vllmHashes.isEmpty { labels[CacheLabels.kserveCacheHash] = vllmHashes.joined(separator: ",") }
            // Without group files to say otherwise, the directory pushed is the VLLM_CACHE_ROOT vLLM wrote.
            labels[CacheLabels.kserveRootEnv] = "VLLM_CACHE_ROOT=\(capture ?? root)"
            if let vllmVersion { labels[CacheLabels.vllmVersion] = vllmVersion }
            let formats = vllmFormats(files: files, hasKernels: !kernels.isEmpty)
            if !formats.isEmpty { labels[CacheLabels.vllmFormat] = formats.joined(separator: ",") }
        }
        return labels
    }

    /// The Triton versions that compiled `kernels`, sorted and comma-separated; nil unless every kernel names its
    /// version (Triton 3.3 and later do), since a label that left some out would hide the image from their Triton.
    static func tritonVersions(_ kernels: [CacheScan.Kernel]) -> String? {
        let versions = kernels.map(\.metadata.tritonVersion)
        guard !versions.isEmpty, !versions.contains(nil) else { return nil }
        return Set(versions.compactMap { $0 }).sorted().joined(separator: ",")
    }

    /// The directory the cache was captured from, as its group files record it: each child path is
    /// `<root>/<the group file's directory>/<child name>`. Nil when there are no group files or they disagree.
    static func captureRoot(files: [CacheScan.File], root: String) -> String? {
        struct Group: Decodable {
            var childPaths: [String: String]
            enum CodingKeys: String, CodingKey { case childPaths = "child_paths" }
        }
        var roots = Set<String>()
        for file in files {
            let name = (file.path as NSString).lastPathComponent
            guard name.hasPrefix("__grp__"), name.hasSuffix(".json"), case .file = file.content,
                let data = FileManager.default.contents(atPath: root + "/" + file.path),
                let group = try? JSONDecoder().decode(Group.self, from: data)
            else { continue }
            let directory = (file.path as NSString).deletingLastPathComponent
            for (child, path) in group.childPaths {
                let suffix = "/" + directory + "/" + child
                guard path.hasSuffix(suffix), path.count > suffix.count else { return nil }
                roots.insert(String(path.dropLast(suffix.count)))
            }
            if roots.count > 1 { return nil }
        }
        return roots.first
    }

    /// `cache.vllm.image/format` as MCV names the layouts: `triton` (Triton kernels below the compile cache),
    /// `binary` and `unpacked` (vLLM's `VLLM_COMPILE_CACHE_SAVE_FORMAT` artifacts as files or directories),
    /// `aot_compile` (`torch_aot_compile/`).
    static func vllmFormats(files: [CacheScan.File], hasKernels: Bool) -> [String] {
        var formats = Set<String>()
        if hasKernels { formats.insert("triton") }
        for file in files {
            let components = file.path.split(separator: "/")
            if components.contains("torch_aot_compile") { formats.insert("aot_compile") }
            guard let last = components.last, last.hasPrefix("artifact_compile_range_") else { continue }
            if case .directory = file.content { formats.insert("unpacked") } else { formats.insert("binary") }
        }
        return formats.sorted()
    }
}
