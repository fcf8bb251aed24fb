/// Which inode number stands for what in an overlay. Directories are identified by path (the same logical
/// directory for every user; what it lists depends on who asks), image files by their tree inode, and upper
/// files by the upper they live in and their path.
struct OverlayInodes {
    enum Identity: Hashable {
        case directory(path: String)
        case lowerFile(UInt64)
        case upper(space: UInt32, path: String)

        var path: String? {
            switch self {
            case .directory(let path), .upper(_, let path): return path
            case .lowerFile: return nil
            }
        }
    }

    /// Numbers for inodes that are not in the image tree start far above any tree inode.
    static let firstDynamicIno: UInt64 = 1 << 40

    private var inoByIdentity: [Identity: UInt64] = [:]
    private var identitiesByIno: [UInt64: [Identity]] = [:]
    private var next = firstDynamicIno

    /// The inode for `identity`; `preferred` (the image tree's own number) is used when it has none yet.
    mutating func ino(for identity: Identity, preferred: UInt64? = nil) -> UInt64 {
        if let ino = inoByIdentity[identity] { return ino }
        let ino: UInt64
        if let preferred {
            ino = preferred
        } else {
            ino = next
            next += 1
        }
        bind(identity, to: ino)
        return ino
    }

    /// Adds a second name for an existing inode (a hard link).
    mutating func bind(_ identity: Identity, to ino: UInt64) {
        inoByIdentity[identity] = ino
        identitiesByIno[ino, default: []].append(identity)
    }

    func identities(of ino: UInt64) -> [Identity] { identitiesByIno[ino] ?? [] }

    mutating func remove(_ identity: Identity) {
        guard let ino = inoByIdentity.removeValue(forKey: identity) else { return }
        identitiesByIno[ino]?.removeAll { $0 == identity }
    }

    /// Re-keys `from` and, for a directory, everything below it, to `to`, keeping inode numbers.
    mutating func move(space: UInt32, from: String, to: String) {
        let prefix = from + "/"
        for (identity, ino) in inoByIdentity {
            guard let path = identity.path, path == from || path.hasPrefix(prefix) else { continue }
            if case .upper(let owner, _) = identity, owner != space { continue }
            let moved = to + path.dropFirst(from.count)
            let renamed: Identity
            switch identity {
            case .directory: renamed = .directory(path: moved)
            case .upper(let owner, _): renamed = .upper(space: owner, path: moved)
            case .lowerFile: continue
            }
            remove(identity)
            remove(renamed)
            bind(renamed, to: ino)
        }
    }
}
