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
