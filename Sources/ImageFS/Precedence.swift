import OCI

/// An image's place in a mount's merge order, and so which image gives each KEY (docs/fleet.md, "Precedence").
///
/// A KEY (a Triton `<KEY>/` directory, a vLLM `torch_compile_cache/<hash>/`) comes whole from the first image in
/// this order that has it; the others add nothing under it. The order:
/// 1. *Base images*: those the mount started with whose tag is not content-derived, in tag order (an index's
///    manifests in index order), as the repository's owner laid them out.
/// 2. *Added images*: images published by nodes (tags ending in 16 hex digits, as `publish` and `compact` name
///    them, whether or not they name their digest), then the images each live refresh added, batch after batch.
///    Within a batch, by manifest digest: not a name the pusher chooses.
///
/// So an added image only ever adds KEYs that no image before it provides, and since a refresh's images rank after
/// every image the mount had, no refresh, new tag or new signature changes the files of a KEY the mount's images
/// provide. The order of a mount's images never changes while it runs: a KEY once resolved stays with its image.
public struct Precedence: Sendable, Hashable, Comparable, CustomStringConvertible {
    public enum Tier: Int, Sendable, Hashable, Comparable {
        case base = 0
        case added = 1

        public static func < (lhs: Tier, rhs: Tier) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    public var tier: Tier
    /// 0 for the images the mount started with; n for those the n-th refresh that added any added.
    public var batch: Int
    /// A base image's place in the catalog (tag order); 0 for added images.
    public var position: Int
    /// The manifest digest's hex digits: the order of added images within a batch.
    public var digest: String

    /// - Parameters:
    ///   - position: the image's place in the catalog it came with.
    ///   - batch: 0 at mount; then the refresh's number.
    public init(of image: CacheImage, position: Int, batch: Int) {
        let base = batch == 0 && !FleetTag.isNodePublished(image.name)
        tier = base ? .base : .added
        self.batch = base ? 0 : batch
        self.position = base ? position : 0
        digest = image.digest.hex
    }

    private init(tier: Tier, batch: Int, position: Int, digest: String) {
        (self.tier, self.batch, self.position, self.digest) = (tier, batch, position, digest)
    }

    /// After every image: what a wait bounded by it waits for is every image.
    static let last = Precedence(tier: .added, batch: .max, position: .max, digest: "")

    public static func < (lhs: Precedence, rhs: Precedence) -> Bool {
        (lhs.tier, lhs.batch, lhs.position, lhs.digest) < (rhs.tier, rhs.batch, rhs.position, rhs.digest)
    }

    public var description: String {
        tier == .base ? "base #\(position)" : "added (batch \(batch), \(digest.prefix(12)))"
    }

    /// The KEY a path (relative to the cache root) lies under: its first component, or its first two below vLLM's
    /// `torch_compile_cache/`, whose hash directories are the KEYs; nil for the shared directory itself.
    static func key(of path: Substring) -> Substring? {
        let components = path.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
        guard components.first == Self.sharedRoot else { return components.first }
        guard components.count > 1 else { return nil }
        return path[..<components[1].endIndex]
    }

    /// vLLM's top-level directory, which every vLLM image shares: its children are the KEYs.
    static let sharedRoot: Substring = "torch_compile_cache"
}

/// Which image gives each KEY of one top-level name, and the images that hold other bytes for a KEY it gives:
/// pure, so the rule is tested without a tree.
public struct KeyOwnership: Sendable {
    /// Two images with different bytes for one KEY: a sign of compromise (someone publishing other code under a
    /// KEY) or of a compiler that is not deterministic. Reported; the image first in precedence keeps the KEY.
    public struct Conflict: Sendable, Hashable, Codable, CustomStringConvertible {
        public var key: String
        /// The image the mount serves the KEY from.
        public var served: String
        /// The image that holds other bytes for it.
        public var other: String

        public init(key: String, served: String, other: String) {
            (self.key, self.served, self.other) = (key, served, other)
        }

        public var description: String { "KEY \(key): served from \(served), other bytes in \(other)" }
    }

    struct Owner: Sendable {
        var image: String
        /// What the KEY holds, compared with other images' copies.
        var fingerprint: [String: LayerFile.Kind?]
    }

    private(set) var owners: [String: Owner] = [:]
    /// Moves with each claim: what a claim made from an older copy must be made again from.
    private(set) var version = 0

    init() {}

    /// Takes what `image` has under each KEY that no image before it gave; the caller offers images in precedence
    /// order. A KEY it holds with other bytes than its owner's is a conflict.
    /// - Parameter files: paths relative to the cache root, for one top-level name.
    /// - Returns: the files taken (the shared directory's own entry included), and the conflicts found.
    mutating func claim(
        _ files: [String: LayerFile], image: String
    ) -> (taken: [String: LayerFile], conflicts: [Conflict]) {
        version += 1
        var byKey: [Substring: [String: LayerFile]] = [:]
        var taken: [String: LayerFile] = [:]
        for (path, file) in files {
            if let key = Precedence.key(of: path[...]) {
                byKey[key, default: [:]][path] = file
            } else {
                taken[path] = file
            }
        }
        var conflicts: [Conflict] = []
        for (key, keyFiles) in byKey {
            let fingerprint = Self.fingerprint(keyFiles)
            if let owner = owners[String(key)] {
                if owner.image != image && owner.fingerprint != fingerprint {
                    conflicts.append(Conflict(key: String(key), served: owner.image, other: image))
                }
                continue
            }
            owners[String(key)] = Owner(image: image, fingerprint: fingerprint)
            taken.merge(keyFiles) { first, _ in first }
        }
        return (taken, conflicts.sorted { $0.key < $1.key })
    }

    /// What is compared between two images' copies of a KEY: every file and link with its content, except the
    /// content of files relocation rewrites (group files name the publishing node's cache root, which differs
    /// between honest images). Directories are left out: one image's tar lists them, another's implies them.
    private static func fingerprint(_ files: [String: LayerFile]) -> [String: LayerFile.Kind?] {
        var fingerprint: [String: LayerFile.Kind?] = [:]
        for (path, file) in files where file.kind != .directory {
            let name = SubtreeResolver.split(path).name
            fingerprint[path] = Relocation.applies(to: name) ? .some(nil) : file.kind
        }
        return fingerprint
    }
}
