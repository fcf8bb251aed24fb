/// Which image gives each KEY of one top-level name, which KEYs are withheld, and the images that hold other bytes
/// for a KEY: pure, so the rule (`Precedence`) is tested without a tree, and the one rule both a mount's tree and
/// a compaction (which exports such a tree) follow.
public struct KeyOwnership: Sendable {
    /// Two images with different bytes for one KEY: a sign of compromise (someone publishing other code under a
    /// KEY) or of a compiler that is not deterministic. Reported. Where the two rank alike, neither gives the KEY:
    /// it is withheld; otherwise the image of the earlier rank keeps it.
    public struct Conflict: Sendable, Hashable, Codable, CustomStringConvertible {
        public var key: String
        /// The image the KEY is served from; nil when it is withheld.
        public var served: String?
        /// For a withheld KEY: the image of the same rank (the first by digest) whose copy `other`'s differs from.
        public var peer: String?
        /// The image that holds other bytes for it.
        public var other: String

        public init(key: String, served: String, other: String) {
            (self.key, self.served, self.peer, self.other) = (key, served, nil, other)
        }

        public init(key: String, withheld peer: String, other: String) {
            (self.key, self.served, self.peer, self.other) = (key, nil, peer, other)
        }

        public var description: String {
            if let served { return "KEY \(key): served from \(served), other bytes in \(other)" }
            return "KEY \(key): withheld, \(peer ?? "?") and \(other) rank alike and hold different bytes for it"
        }
    }

    /// What one image offers, in precedence order.
    struct Claimant {
        var image: String
        var rank: Precedence.Rank
        /// Paths relative to the cache root, for one top-level name.
        var files: [String: LayerFile]
    }

    enum Holder: Sendable {
        /// Given by `image`; later images' copies are compared with `fingerprint`.
        case owned(image: String, fingerprint: Fingerprint)
        /// Images of one rank disagreed on it: no image gives it, for the life of the tree.
        case withheld
    }

    /// What a KEY holds, compared between images' copies.
    typealias Fingerprint = [String: LayerFile.Kind?]

    private(set) var holders: [String: Holder] = [:]
    /// Moves with each claim: what a claim made from an older copy must be made again from.
    private(set) var version = 0

    init() {}

    /// Takes each KEY that no earlier claim decided, from the first rank among `claimants` that has it: whole from
    /// the first image of that rank when every image of the rank holding it holds the same copy, else from none
    /// (withheld). A KEY decided before keeps its holder; an image holding other bytes for a served KEY is a
    /// conflict.
    /// - Parameter claimants: in precedence order.
    /// - Returns: the files taken (the shared directory's own entry included, from the first image that has it),
    ///   and the conflicts found, sorted by KEY.
    mutating func claim(_ claimants: [Claimant]) -> (taken: [String: LayerFile], conflicts: [Conflict]) {
        version += 1
        var taken: [String: LayerFile] = [:]
        var conflicts: [Conflict] = []
        var byRank: [(rank: Precedence.Rank, copies: [Substring: [(image: String, files: [String: LayerFile])]])] = []
        for claimant in claimants {
            var byKey: [Substring: [String: LayerFile]] = [:]
            for (path, file) in claimant.files {
                if let key = Precedence.key(of: path[...]) {
                    byKey[key, default: [:]][path] = file
                } else if taken[path] == nil {
                    taken[path] = file
                }
            }
            if byRank.last?.rank != claimant.rank { byRank.append((claimant.rank, [:])) }
            for (key, files) in byKey {
                byRank[byRank.count - 1].copies[key, default: []].append((claimant.image, files))
            }
        }
        for (_, copies) in byRank {
            for (key, holding) in copies {
                let fingerprints = holding.map { Self.fingerprint($0.files) }
                switch holders[String(key)] {
                case .withheld:
                    continue
                case .owned(let owner, let fingerprint):
                    for (copy, other) in zip(holding, fingerprints) where copy.image != owner && other != fingerprint {
                        conflicts.append(Conflict(key: String(key), served: owner, other: copy.image))
                    }
                case nil:
                    let first = holding[0]
                    let differing = zip(holding, fingerprints).filter { $0.1 != fingerprints[0] }.map(\.0.image)
                    if differing.isEmpty {
                        holders[String(key)] = .owned(image: first.image, fingerprint: fingerprints[0])
                        taken.merge(first.files) { earlier, _ in earlier }
                    } else {
                        holders[String(key)] = .withheld
                        conflicts += differing.map { Conflict(key: String(key), withheld: first.image, other: $0) }
                    }
                }
            }
        }
        return (taken, conflicts.sorted { ($0.key, $0.other) < ($1.key, $1.other) })
    }

    /// What is compared between two images' copies of a KEY: every file and link with its content, except the
    /// content of files relocation rewrites (group files name the publishing node's cache root, which differs
    /// between honest images). Directories are left out: one image's tar lists them, another's implies them.
    private static func fingerprint(_ files: [String: LayerFile]) -> Fingerprint {
        var fingerprint: Fingerprint = [:]
        for (path, file) in files where file.kind != .directory {
            let name = SubtreeResolver.split(path).name
            fingerprint[path] = Relocation.applies(to: name) ? .some(nil) : file.kind
        }
        return fingerprint
    }
}
