import Foundation
import Glibc
import Synchronization

/// A writable overlay over the verified, read-only image tree (the lower).
///
/// Writes land in an upper directory on local disk, one per caller uid by default, so one user's kernels can
/// never change what another loads, and nothing can alter an image file: changing one copies it up first.
/// Deleting an image file records a whiteout in the caller's upper. Names are resolved per caller on every
/// lookup (the kernel is told not to cache them), since the same name can mean different files to different
/// users.
public final class OverlayFileSystem: FileSystem {
    public enum Isolation: String, Sendable {
        /// One upper per caller uid (`<upper>/<uid>/`).
        case perUser
        /// One upper for everyone (`<upper>/shared/`), directories sticky like /tmp.
        case shared
    }

    public struct Options: Sendable {
        public var upperRoot: String
        public var isolation: Isolation
        /// Root as consumers see it: group files written into the upper are relocated on read like image ones.
        public var consumerRoot: String

        public init(upperRoot: String, isolation: Isolation, consumerRoot: String) {
            self.upperRoot = upperRoot
            self.isolation = isolation
            self.consumerRoot = consumerRoot
        }
    }

    enum Resolved {
        case directory(path: [String], lower: ImageTree.Node?, upper: stat?)
        case lowerFile(path: [String], node: ImageTree.Node)
        case upperFile(path: [String], info: stat)
    }

    struct Shadow {
        var fd: Int32
        /// The work file until the first close publishes it; nil afterwards (writes then go in place).
        var workName: String?
        var path: [String]
        var upper: UpperLayer
        var permissions: UInt32
        var ino: UInt64
        var append: Bool
    }

    enum Handle {
        case lower(UInt64)
        case descriptor(Int32)
        case bytes(Data)
        case shadow(Shadow)
    }

    let lower: ImageFileSystem
    let options: Options
    let owner: (uid: UInt32, gid: UInt32)
    private let uppers = Mutex<[UInt32: UpperLayer]>([:])
    let inodes = Mutex(OverlayInodes())
    let handles = Mutex<(next: UInt64, open: [UInt64: Handle], pending: [UInt64: Int32])>((1, [:], [:]))

    public init(lower: ImageFileSystem, options: Options, owner: (uid: UInt32, gid: UInt32)) throws(FSError) {
        self.lower = lower
        self.options = options
        self.owner = owner
        if mkdir(options.upperRoot, 0o711) != 0 && errno != EEXIST {
            throw .unavailable(reason: "cannot create \(options.upperRoot): \(UpperLayer.lastError())")
        }
    }

    /// The upper a caller writes to, created on first use.
    func upper(for caller: Caller) throws(FSError) -> UpperLayer {
        let space = space(of: caller)
        if let existing = uppers.withLock({ $0[space] }) { return existing }
        let name = Self.upperName(isolation: options.isolation, uid: caller.uid)
        let layerOwner = options.isolation == .shared ? owner : (caller.uid, caller.gid)
        return try uppers.withLock { uppers throws(FSError) in
            if let existing = uppers[space] { return existing }
            // Created under the lock: a new layer clears its work directory, which must happen only once.
            let layer = try UpperLayer(root: options.upperRoot + "/" + name, owner: layerOwner)
            uppers[space] = layer
            return layer
        }
    }

    /// The directory under the upper root that holds what `uid` writes.
    public static func upperName(isolation: Isolation, uid: UInt32) -> String {
        isolation == .shared ? "shared" : String(uid)
    }

    func space(of caller: Caller) -> UInt32 { options.isolation == .shared ? UInt32.max : caller.uid }

    static func isDirectory(_ info: stat) -> Bool { info.st_mode & S_IFMT == S_IFDIR }

    // MARK: Resolution

    /// What `path` is for this caller: the upper wins; the image shows through unless a whiteout, an opaque
    /// directory or an upper non-directory above it hides it.
    func resolve(_ path: [String], caller: Caller) throws(FSError) -> Resolved? {
        let tree = lower.load()
        let probe = try upper(for: caller).probe(path)
        let lowerPath = path.joined(separator: "/")
        let lowerNode: ImageTree.Node?
        if probe.hidesLower {
            lowerNode = nil
        } else if probe.info != nil {
            // What the upper holds serves even while an image that may also hold the path is unavailable.
            lowerNode = try? tree.node(atPath: lowerPath)
        } else {
            lowerNode = try tree.node(atPath: lowerPath)
        }
        if let info = probe.info {
            guard Self.isDirectory(info) else { return .upperFile(path: path, info: info) }
            return .directory(path: path, lower: lowerNode?.kind == .directory ? lowerNode : nil, upper: info)
        }
        guard let node = lowerNode else { return nil }
        return node.kind == .directory
            ? .directory(path: path, lower: node, upper: nil) : .lowerFile(path: path, node: node)
    }

    /// The path an inode stands for, for this caller.
    func path(of ino: UInt64, caller: Caller) throws(FSError) -> [String] {
        if ino == ImageFileSystem.rootIno { return [] }
        let space = space(of: caller)
        for identity in inodes.withLock({ $0.identities(of: ino) }) {
            switch identity {
            case .directory(let path): return Self.components(path)
            case .upper(let owner, let path) where owner == space: return Self.components(path)
            case .lowerFile(let treeIno):
                if let path = lower.load().path(of: treeIno) { return path }
            default: continue
            }
        }
        throw .notFound
    }

    static func components(_ path: String) -> [String] { path.split(separator: "/").map(String.init) }

    func ino(of resolved: Resolved, caller: Caller) -> UInt64 {
        inodes.withLock { table in
            switch resolved {
            case .directory(let path, let lowerNode, _):
                return path.isEmpty
                    ? ImageFileSystem.rootIno
                    : table.ino(for: .directory(path: path.joined(separator: "/")), preferred: lowerNode?.ino)
            case .lowerFile(_, let node):
                return table.ino(for: .lowerFile(node.ino), preferred: node.ino)
            case .upperFile(let path, _):
                return table.ino(for: .upper(space: space(of: caller), path: path.joined(separator: "/")))
            }
        }
    }

    // MARK: Attributes

    func attributes(of resolved: Resolved, caller: Caller) throws(FSError) -> Attributes {
        let ino = ino(of: resolved, caller: caller)
        var attributes: Attributes
        switch resolved {
        case .directory(_, let lowerNode, let info):
            // Every caller may write into every directory: what they write goes to their own upper. In a shared
            // upper, directories are sticky so users cannot remove each other's files.
            let shared = options.isolation == .shared
            attributes = Attributes(
                ino: ino, kind: .directory, permissions: shared ? 0o1777 : 0o755, links: 2, size: 0,
                uid: shared ? owner.uid : caller.uid, gid: shared ? owner.gid : caller.gid,
                modified: info.map { Int64($0.st_mtim.tv_sec) } ?? lowerNode?.modified ?? 0)
            attributes.isVolatile = true
        case .lowerFile(_, let node):
            attributes = try lower.attributes(ino: node.ino, caller: caller)
            attributes.ino = ino
        case .upperFile(let path, let info):
            attributes = Self.attributes(info, ino: ino)
            if Relocation.applies(to: path.last ?? ""), let bytes = try relocated(path, caller: caller) {
                attributes.size = Int64(bytes.count)
            }
            if let fd = handles.withLock({ $0.pending[ino] }) {
                var current = stat()
                if fstat(fd, &current) == 0 { attributes.size = Int64(current.st_size) }
            }
            attributes.isVolatile = true
        }
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

    /// An upper file that names absolute paths, as consumers must see it (paths under this mount's consumer root).
    func relocated(_ path: [String], caller: Caller) throws(FSError) -> Data? {
        let fd = try upper(for: caller).openFile(path, flags: O_RDONLY)
        defer { close(fd) }
        let data = FileHandle(fileDescriptor: fd, closeOnDealloc: false).readDataToEndOfFile()
        return Relocation.rewrite(
            data, name: path.last ?? "", directory: path.dropLast().joined(separator: "/"), root: options.consumerRoot)
            ?? data
    }

    // MARK: FileSystem: reading

    public func lookup(parent: UInt64, name: String, caller: Caller) throws(FSError) -> Attributes {
        if parent == ImageFileSystem.rootIno && name == ImageFileSystem.controlName || parent < 16 && parent != 1 {
            return try lower.lookup(parent: parent, name: name, caller: caller)
        }
        if UpperLayer.isReserved(name) { throw .notFound }
        guard let resolved = try resolve(try path(of: parent, caller: caller) + [name], caller: caller) else {
            throw .notFound
        }
        return try attributes(of: resolved, caller: caller)
    }

    public func forget(ino: UInt64, count: UInt64) {}

    public func attributes(ino: UInt64, caller: Caller) throws(FSError) -> Attributes {
        if ino != ImageFileSystem.rootIno && ino < 16 { return try lower.attributes(ino: ino, caller: caller) }
        if ino == ImageFileSystem.rootIno && !lower.isLoaded {
            var root = try lower.attributes(ino: ino, caller: caller)
            root.isVolatile = true
            return root
        }
        guard let resolved = try resolve(try path(of: ino, caller: caller), caller: caller) else { throw .notFound }
        return try attributes(of: resolved, caller: caller)
    }

    public func readLink(ino: UInt64, caller: Caller) throws(FSError) -> String {
        switch try resolve(try path(of: ino, caller: caller), caller: caller) {
        case .lowerFile(_, let node)?: return try lower.readLink(ino: node.ino, caller: caller)
        case .upperFile(let path, _)?:
            guard let target = try upper(for: caller).readLink(path) else { throw .invalidArgument }
            return target
        case .directory?: throw .invalidArgument
        case nil: throw .notFound
        }
    }

    public func listDirectory(ino: UInt64, caller: Caller) throws(FSError) -> [DirectoryEntry] {
        if ino != ImageFileSystem.rootIno && ino < 16 { return try lower.listDirectory(ino: ino, caller: caller) }
        // Every top-level name is resolved below: all at once, after one prefetch of their metadata.
        if ino == ImageFileSystem.rootIno { try lower.load().resolveAll() }
        let path = try path(of: ino, caller: caller)
        guard case .directory(_, let lowerNode, let upperInfo)? = try resolve(path, caller: caller) else {
            throw .notDirectory
        }
        var names = Set<String>()
        if upperInfo != nil {
            let (upperNames, whiteouts) = try upper(for: caller).list(path)
            names.formUnion(upperNames)
            if let lowerNode, !(try upper(for: caller).isOpaque(path)) {
                names.formUnion(lowerNode.listing.filter { !whiteouts.contains($0) })
            }
        } else if let lowerNode {
            names.formUnion(lowerNode.listing)
        }
        var entries = [
            DirectoryEntry(ino: ino, name: ".", kind: .directory),
            DirectoryEntry(
                ino: ino == ImageFileSystem.rootIno
                    ? ino : (try? self.ino(ofPath: Array(path.dropLast()), caller: caller)) ?? ino, name: "..",
                kind: .directory),
        ]
        for name in names.sorted() {
            guard let child = try resolve(path + [name], caller: caller) else { continue }
            let attributes = try attributes(of: child, caller: caller)
            entries.append(DirectoryEntry(ino: attributes.ino, name: name, kind: attributes.kind))
        }
        return entries
    }

    func ino(ofPath path: [String], caller: Caller) throws(FSError) -> UInt64 {
        guard let resolved = try resolve(path, caller: caller) else { throw .notFound }
        return ino(of: resolved, caller: caller)
    }

    public func statistics() -> FileSystemStatistics {
        var info = statvfs()
        guard statvfs(options.upperRoot, &info) == 0 else { return lower.statistics() }
        return FileSystemStatistics(
            blockSize: UInt64(info.f_bsize), blocks: UInt64(info.f_blocks), freeBlocks: UInt64(info.f_bavail),
            files: UInt64(info.f_files), nameMax: UInt64(info.f_namemax))
    }
}
