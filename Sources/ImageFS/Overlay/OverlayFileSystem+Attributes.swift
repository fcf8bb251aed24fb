import Foundation
import Glibc

/// What `stat` reports for the overlay's inodes.
extension OverlayFileSystem {
    /// The attributes of what `resolved` is, as inode `ino`. Directories look the same to every caller (anyone may
    /// write into any directory: it lands in their own upper), so the kernel may keep them.
    func attributes(of resolved: Resolved, ino: UInt64, caller: Caller) throws(FSError) -> Attributes {
        switch resolved {
        case .directory(_, let lowerNode, let info):
            let modified = lowerNode?.modified ?? info.map { Int64($0.st_mtim.tv_sec) } ?? mounted
            return directoryAttributes(ino: ino, modified: modified)
        case .lowerFile(_, let node):
            var attributes = try lower.attributes(ino: node.ino, caller: caller)
            attributes.ino = ino
            attributes.nameIsVolatile = true
            return attributes
        case .upperFile(let path, let info):
            return try upperAttributes(info, path: path, ino: ino, upper: upper(for: caller))
        }
    }

    func directoryAttributes(ino: UInt64, modified: Int64) -> Attributes {
        // In a shared upper, directories are sticky so users cannot remove each other's files.
        let shared = options.isolation == .shared
        var attributes = Attributes(
            ino: ino, kind: .directory, permissions: shared ? 0o1777 : 0o777, links: 2, size: 0, uid: owner.uid,
            gid: owner.gid, modified: modified)
        attributes.nameIsVolatile = true
        return attributes
    }

    /// An upper file's attributes, with the rewritten size for a group file (given the upper to read it from).
    func upperAttributes(_ info: stat, path: [String], ino: UInt64, upper: UpperLayer?) throws(FSError) -> Attributes {
        var attributes = Self.attributes(info, ino: ino)
        if info.st_mode & S_IFMT == S_IFREG, Relocation.applies(to: path.last ?? ""), let upper,
            let bytes = try relocated(path, in: upper)
        {
            attributes.size = Int64(bytes.count)
        }
        attributes.isVolatile = true
        attributes.nameIsVolatile = true
        return attributes
    }

    static func attributes(_ info: stat, ino: UInt64) -> Attributes {
        let type = info.st_mode & S_IFMT
        return Attributes(
            ino: ino, kind: type == S_IFDIR ? .directory : type == S_IFLNK ? .symlink : .file,
            permissions: info.st_mode & 0o7777, links: UInt32(info.st_nlink), size: Int64(info.st_size),
            uid: info.st_uid, gid: info.st_gid, modified: Int64(info.st_mtim.tv_sec))
    }

    /// An upper file that names absolute paths, as consumers must see it (paths under this mount's consumer root);
    /// nil when it is served as it is: nothing to change, larger than `Relocation.inputLimit` (never read whole), or
    /// relocated larger than `Relocation.outputLimit(forInput:)`. Each version of a file is relocated once
    /// (`RelocationCache`), and the opens of one version share its bytes.
    func relocated(_ path: [String], in upper: UpperLayer) throws(FSError) -> Data? {
        var key: RelocationCache.Key?
        var known: Data??
        let read = try upper.read(path, limit: Relocation.inputLimit) { info in
            key = RelocationCache.Key(path: path, info: info)
            known = relocations.value(for: key!)
            return known != nil
        }
        if let known { return known }
        guard case .bytes(let data) = read, let key else { return nil }
        let directory = path.dropLast().joined(separator: "/")
        var value: Data?
        switch Relocation.relocate(data, name: path.last ?? "", directory: directory, root: options.consumerRoot) {
        case .unchanged: value = nil
        case .rewritten(let rewritten): value = rewritten
        case .overLimit:
            value = nil
            if !warnedOverLimit.exchange(true, ordering: .relaxed) {
                options.log(
                    "\(upper.root)/\(path.joined(separator: "/")) is served as it is, not relocated: relocated it would exceed "
                        + "\(Relocation.outputLimit(forInput: data.count)) bytes (a deep directory or many paths); "
                        + "move it nearer the cache root (logged once per mount)")
            }
        }
        relocations.insert(value, for: key)
        return value
    }

    func handleAttributes(_ handle: UInt64, ino: UInt64) throws(FSError) -> Attributes? {
        let fd: Int32
        switch handles.withLock({ $0[handle] }) {
        case .shadow(let shadow)?: fd = shadow.fd
        case .descriptor(let descriptor)?: fd = descriptor
        case .bytes(let data)?:
            guard case .upperFile(let path, let space) = try subject(of: ino),
                let info = try upper(space: space).status(path)
            else { return nil }
            var attributes = Self.attributes(info, ino: ino)
            attributes.size = Int64(data.count)
            attributes.isVolatile = true
            return attributes
        case .lower?, nil: return nil
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw UpperLayer.error(errno) }
        var attributes = Self.attributes(info, ino: ino)
        attributes.isVolatile = true
        return attributes
    }
}
