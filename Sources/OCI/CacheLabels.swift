import Foundation

/// The labels Model Cache Vault (MCV) writes on a cache image's config, read leniently: a label that does not
/// parse is treated as absent, since the layer itself is authoritative.
public struct CacheLabels: Sendable, Hashable {
    public static let tritonSummary = "cache.triton.image/summary"
    public static let tritonEntryCount = "cache.triton.image/entry-count"
    public static let tritonCacheSize = "cache.triton.image/cache-size-bytes"
    public static let tritonVariant = "cache.triton.image/variant"
    public static let genericType = "model.cache.image/type"
    public static let genericComponents = "model.cache.image/components"
    public static let genericEntryCount = "model.cache.image/entry-count"
    public static let genericCacheSize = "model.cache.image/cache-size-bytes"
    public static let genericSummary = "model.cache.image/summary"
    public static let vllmEntryCount = "cache.vllm.image/entry-count"
    public static let vllmSummary = "cache.vllm.image/summary"
    /// The vLLM cache formats inside (`triton`, `binary`, `unpacked`, `aot_compile`), comma-separated.
    public static let vllmFormat = "cache.vllm.image/format"
    /// mcvfs's own: the vLLM version that wrote a vLLM cache. vLLM hashes its version into every cache key, so
    /// another version never hits.
    public static let vllmVersion = "cache.vllm.image/vllm-version"
    /// mcvfs's own: the Triton versions that compiled the image's kernels, comma-separated. A Triton cache key
    /// includes Triton's version, so a node with another version can never hit these kernels.
    public static let tritonVersion = "model.cache.image/triton-version"

    // The labels GKM's MCV writes for KServe's KernelCache (GKM `mcv/pkg/cacheplan`, their shared contract): what
    // the cache is, which environment variable points a framework at it and the path it was captured from.
    public static let kserveFramework = "io.kserve.km/framework"
    public static let kserveCacheType = "io.kserve.km/cache-type"
    /// `NAME=VALUE`: the variable and the directory the cache was captured from (`VLLM_CACHE_ROOT=/home/x/.cache/vllm`).
    public static let kserveRootEnv = "io.kserve.km/cache-root-env"
    /// The primary cache subtree, relative to the payload root (`torch_compile_cache`).
    public static let kserveMountSubpath = "io.kserve.km/cache-mount-subpath"
    public static let kserveCacheHash = "io.kserve.km/cache-hash"
    /// JSON `[{"subPath","absPath","env","requiresWritable"}]`: more trees of the payload and their variables.
    public static let kserveCacheMounts = "io.kserve.km/cache-mounts"

    public enum Kind: String, Sendable, Hashable, Codable {
        case triton
        case vllm
    }

    public let raw: [String: String]

    public init(_ labels: [String: String]) { self.raw = labels }

    /// What kind of cache the labels describe; nil when they describe none (not a cache image).
    public var kinds: Set<Kind> {
        var kinds = Set<Kind>()
        if raw.keys.contains(where: { $0.hasPrefix("cache.triton.image/") }) { kinds.insert(.triton) }
        if raw.keys.contains(where: { $0.hasPrefix("cache.vllm.image/") }) { kinds.insert(.vllm) }
        for component in (raw[Self.genericComponents] ?? raw[Self.genericType] ?? "").split(separator: ",") {
            if let kind = Kind(rawValue: component.trimmingCharacters(in: .whitespaces).lowercased()) {
                kinds.insert(kind)
            }
        }
        for key in [Self.kserveFramework, Self.kserveCacheType] {
            if let value = raw[key], let kind = Self.kind(kserve: value) { kinds.insert(kind) }
        }
        return kinds
    }

    public var isCacheImage: Bool { !kinds.isEmpty }

    /// KServe's names for what mcvfs serves: the framework (`triton`, `vllm`) or cache type (`torch-compile` is
    /// vLLM's). Nil for the others (`habana-recipe`, types added later), whose payloads mcvfs does not lay out.
    static func kind(kserve value: String) -> Kind? {
        switch value.trimmingCharacters(in: .whitespaces).lowercased() {
        case "triton": return .triton
        case "vllm", "torch-compile": return .vllm
        default: return nil
        }
    }

    /// Why mcvfs cannot serve the image although it is a kernel cache: its KServe labels declare a framework or
    /// cache type other than Triton's and vLLM's. Nil when it can.
    public var unservableReason: String? {
        for key in [Self.kserveFramework, Self.kserveCacheType] {
            guard let value = raw[key]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { continue }
            if Self.kind(kserve: value) == nil { return "\(key) is \(value): not a Triton or vLLM cache" }
        }
        return nil
    }

    /// The Triton versions the image's kernels were compiled by; nil when the image does not say.
    public var tritonVersions: Set<String>? {
        guard let text = raw[Self.tritonVersion] else { return nil }
        let versions = Set(
            text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        return versions.isEmpty ? nil : versions
    }

    /// The vLLM cache formats the image holds (`cache.vllm.image/format`).
    public var vllmFormats: [String] {
        (raw[Self.vllmFormat] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
    }

    /// `io.kserve.km/cache-root-env` as a variable name and the path the cache was captured from; nil when absent
    /// or not `NAME=/absolute/path`.
    public var captureRoot: (variable: String, path: String)? {
        guard let text = raw[Self.kserveRootEnv], let equals = text.firstIndex(of: "=") else { return nil }
        let name = String(text[..<equals])
        // A tunable suffix after a comma is part of the value (Habana's `DIR,false,8192`); the path ends there.
        let path = String(text[text.index(after: equals)...].prefix { $0 != "," })
        guard Self.isVariableName(name), path.hasPrefix("/") else { return nil }
        return (name, path)
    }

    /// The primary cache subtree (`io.kserve.km/cache-mount-subpath`) when it stays inside the payload.
    public var mountSubpath: String? {
        raw[Self.kserveMountSubpath].flatMap { Self.isContained($0) ? $0 : nil }
    }

    /// The environment a consumer needs to find the image's caches when it sees the mount at `root`: the variable
    /// of each tree (the kind's own, or the one its KServe labels name) pointing into `root`, in the order a
    /// consumer should apply them. The capture path in the labels is not used: mcvfs relocates to `root`.
    public func consumerEnvironment(root: String) -> [(name: String, value: String)] {
        var environment: [(name: String, value: String)] = []
        let kinds = self.kinds
        if kinds.contains(.triton) { environment.append(("TRITON_CACHE_DIR", root)) }
        if kinds.contains(.vllm) {
            let variable = captureRoot?.variable ?? "VLLM_CACHE_ROOT"
            environment.append((variable, root))
        }
        struct Mount: Decodable {
            var subPath: String
            var env: String?
        }
        let mounts = raw[Self.kserveCacheMounts].flatMap {
            try? JSONDecoder().decode([Mount].self, from: Data($0.utf8))
        }
        for mount in mounts ?? [] {
            guard let name = mount.env, Self.isVariableName(name), Self.isContained(mount.subPath),
                !environment.contains(where: { $0.name == name })
            else { continue }
            environment.append((name, mount.subPath == "." ? root : root + "/" + mount.subPath))
        }
        return environment
    }

    static func isVariableName(_ name: String) -> Bool {
        guard let first = name.first, !first.isNumber else { return false }
        return name.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
    }

    /// A relative path that names something inside the payload: no absolute path, no `..`.
    static func isContained(_ path: String) -> Bool {
        !path.isEmpty && !path.hasPrefix("/") && !path.split(separator: "/").contains("..")
    }

    /// Targets from `cache.triton.image/summary` (`{"targets":[{"backend","arch","warp_size"}]}`);
    /// nil when the label is missing or unreadable, so callers fall back to reading kernels.
    /// A vLLM image's `cache.vllm.image/summary` is read when there is no Triton summary; an empty vLLM list
    /// (older mcvfs pushes wrote `{"targets":[]}`) counts as unknown, not as "runs nowhere".
    public var targets: [GPUTarget]? {
        struct Summary: Decodable { var targets: [GPUTarget] }
        func decode(_ key: String) -> [GPUTarget]? {
            guard let text = raw[key], let data = text.data(using: .utf8) else { return nil }
            return try? JSONDecoder().decode(Summary.self, from: data).targets
        }
        if let triton = decode(Self.tritonSummary) { return triton }
        return decode(Self.vllmSummary).flatMap { $0.isEmpty ? nil : $0 }
    }

    public var entryCount: Int? { (raw[Self.tritonEntryCount] ?? raw[Self.genericEntryCount]).flatMap { Int($0) } }
    public var cacheSizeBytes: Int64? {
        (raw[Self.tritonCacheSize] ?? raw[Self.genericCacheSize]).flatMap { Int64($0) }
    }
    public var variant: String? { raw[Self.tritonVariant] }
}

/// Tags that cosign and other tools use for their own artifacts, never cache images:
/// `sha256-<hex>.sig`, `.att`, `.sbom`, and the referrers fallback tag `sha256-<hex>`.
public enum ArtifactTag {
    public static func isCosign(_ tag: String) -> Bool {
        guard tag.hasPrefix("sha256-") else { return false }
        var hex = tag.dropFirst("sha256-".count)
        for suffix in [".sig", ".att", ".sbom"] where hex.hasSuffix(suffix) {
            hex = hex.dropLast(suffix.count)
            break
        }
        return hex.count == 64 && hex.allSatisfy(\.isHexDigit)
    }
}
