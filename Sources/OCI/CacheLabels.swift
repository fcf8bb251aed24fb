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
        return kinds
    }

    public var isCacheImage: Bool { !kinds.isEmpty }

    /// Targets from `cache.triton.image/summary` (`{"targets":[{"backend","arch","warp_size"}]}`);
    /// nil when the label is missing or unreadable, so callers fall back to reading kernels.
    public var targets: [GPUTarget]? {
        struct Summary: Decodable { var targets: [GPUTarget] }
        guard let text = raw[Self.tritonSummary], let data = text.data(using: .utf8) else { return nil }
        return try? JSONDecoder().decode(Summary.self, from: data).targets
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
