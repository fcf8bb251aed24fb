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
                    tritonCacheEntries: kernels.filter { $0.directory.hasPrefix("torch_compile_cache/\(hash)/") }
                        .map { TritonEntry($0.metadata) })
            }
            return encode(["vllm": entries], pretty: true)
        }
    }

    /// The config labels MCV writes, for an image holding `kernels` and `cacheSizeBytes` bytes of cache files.
    public static func labels(
        kind: CacheScan.Kind, kernels: [CacheScan.Kernel], vllmHashes: [String], cacheSizeBytes: Int64
    ) -> [String: String] {
        let targets = CacheScan.distinctTargets(kernels.map(\.metadata.target))
        let summary = String(decoding: encode(Summary(targets)), as: UTF8.self)
        let size = String(cacheSizeBytes)
        var labels: [String: String] = [
            CacheLabels.genericType: kind.rawValue,
            CacheLabels.genericComponents: kind.rawValue,
            CacheLabels.genericCacheSize: size,
            CacheLabels.genericSummary: summary,
        ]
        switch kind {
        case .triton:
            labels[CacheLabels.genericEntryCount] = String(kernels.count)
            labels[CacheLabels.tritonSummary] = summary
            labels[CacheLabels.tritonEntryCount] = String(kernels.count)
            labels[CacheLabels.tritonCacheSize] = size
            labels[CacheLabels.tritonVariant] = "multi"
        case .vllm:
            labels[CacheLabels.genericEntryCount] = String(vllmHashes.count)
            labels[CacheLabels.vllmEntryCount] = String(vllmHashes.count)
            labels["cache.vllm.image/cache-size-bytes"] = size
            labels[CacheLabels.vllmSummary] = summary
        }
        return labels
    }
}
