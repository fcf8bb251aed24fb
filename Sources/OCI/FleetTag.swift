/// The tags published and compacted images get: `<prefix>-<target>-<digest>`, e.g.
/// `fleet-cuda-sm90-3f2a9c0b7d1e4a56`, where `<digest>` is the first 16 hex digits of the image's manifest digest.
///
/// Content-derived, so a tag names one image forever: no publish can overwrite another node's tag or an earlier
/// publish's with different content (two nodes that publish the same kernels make the same image, and write the
/// same tag with the same digest), publishing the same kernels again writes nothing new, and a mount that knows a
/// fleet tag never asks the registry about it again (`isContentDerived`). A tag whose manifest does not start with
/// its digest was moved by someone: compaction leaves it alone (docs/fleet.md).
public struct FleetTag: Sendable, Hashable, CustomStringConvertible {
    /// Hex digits of the manifest digest kept in the tag: 64 bits, enough that no two images collide by chance.
    public static let digestLength = 16
    public static let defaultPrefix = "fleet"

    public var prefix: String
    /// The target part, as `mcvfs push --split per-target` names targets (`cuda-sm90`, `hip-gfx942`).
    public var target: String
    /// The manifest digest's leading hex digits.
    public var digestPrefix: String

    public init(prefix: String = Self.defaultPrefix, target: String, digest: Digest) {
        self.prefix = prefix
        self.target = target
        self.digestPrefix = String(digest.hex.prefix(Self.digestLength))
    }

    /// Parses a tag of this scheme under `prefix`; nil for every other tag.
    public init?(parsing tag: String, prefix: String = Self.defaultPrefix) {
        guard tag.hasPrefix(prefix + "-") else { return nil }
        let rest = tag.dropFirst(prefix.count + 1)
        guard let dash = rest.lastIndex(of: "-") else { return nil }
        let target = rest[..<dash]
        let hex = rest[rest.index(after: dash)...]
        guard !target.isEmpty, hex.count == Self.digestLength,
            hex.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
        else { return nil }
        self.prefix = prefix
        self.target = String(target)
        self.digestPrefix = String(hex)
    }

    public var description: String { "\(prefix)-\(target)-\(digestPrefix)" }

    /// Whether `digest` is the image this tag names.
    public func names(_ digest: Digest) -> Bool { digest.hex.hasPrefix(digestPrefix) }

    /// Whether `tag` names `digest` by its content, whatever its prefix: its last `-`-separated part is the
    /// digest's first 16 hex digits. Such a tag cannot move to another image without its name lying, so a mount
    /// that resolved it once need not ask the registry again.
    public static func isContentDerived(_ tag: String, digest: Digest) -> Bool {
        guard let dash = tag.lastIndex(of: "-") else { return false }
        let hex = tag[tag.index(after: dash)...]
        return hex.count == digestLength && digest.hex.hasPrefix(hex)
    }

    /// The target part of an image's tag for each of `targets`, shared by fleet tags and `push --split per-target`:
    /// `cuda-sm90`, `hip-gfx942`, `cpu-avx512`; a warp size is added only when two targets would otherwise share a name.
    public static func targetNames(for targets: [GPUTarget]) -> [GPUTarget: String] {
        func base(_ t: GPUTarget) -> String {
            switch t.backend {
            case .cuda: return "cuda-sm\(t.arch)"
            case .hip: return "hip-\(t.arch)"
            case .cpu: return "cpu-\(t.arch)"
            }
        }
        var counts: [String: Int] = [:]
        for t in targets { counts[base(t), default: 0] += 1 }
        var result: [GPUTarget: String] = [:]
        for t in targets {
            result[t] = counts[base(t)]! > 1 ? "\(base(t))-w\(t.warpSize.map(String.init) ?? "any")" : base(t)
        }
        return result
    }

    /// The target part of an image for no single target (one image for all of a cache's targets).
    public static let anyTarget = "any"

    /// The tag `push --split per-target` gives one target's image: the user's tag (or none) and the target's name.
    /// - Parameters:
    ///   - tag: the reference's tag; nil when the reference has none.
    ///   - target: the target's name (`targetNames(for:)`); nil for the single image of an unsplit push.
    public static func split(tag: String?, target: String?) -> String {
        target.map { target in tag.map { "\($0)-\(target)" } ?? target } ?? tag ?? "latest"
    }

    /// Whether `tag` has the shape of a node-published tag, whatever its prefix and whether or not it names its
    /// image: its last `-`-separated part is 16 lowercase hex digits. Such an image only adds KEYs to a mount
    /// (`Precedence`): by its shape alone, so a tag that lies about its digest gains nothing.
    public static func isNodePublished(_ tag: String) -> Bool {
        guard let dash = tag.lastIndex(of: "-") else { return false }
        let hex = tag[tag.index(after: dash)...]
        return hex.utf8.count == digestLength
            && hex.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// Whether `prefix` can start a tag (the registry's tag grammar leaves room for the rest).
    public static func isValidPrefix(_ prefix: String) -> Bool {
        guard let first = prefix.utf8.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-"),
            prefix.utf8.count <= 64
        else { return false }
        return prefix.utf8.allSatisfy { byte in
            (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }
    }
}
