import Foundation
import Glibc
import Synchronization

/// A writable overlay over the verified, read-only image tree (the lower).
///
/// Writes land in an upper directory on local disk, one per caller uid by default, so one user's kernels can
/// never change what another loads, and nothing can alter an image file: changing one copies it up first.
/// Deleting an image file records a whiteout in the caller's upper.
///
/// What the kernel may cache follows one rule: an inode stands for one thing, the same for every caller (an image
/// file, a directory, one upper's file), so its attributes and pages can be shared. What differs between callers is
/// which inode a name leads to, and a name is cached only while it leads every caller to the same inode: the
/// image's files and directories that no upper hides or replaces. Names in per-user uppers never are. When a
/// caller's copy-up changes what an image file's name means for them, the kernel is told to drop the name (see
/// `isCommon`); until it has, that caller reaching the image file's inode is served their own copy, never through
/// the image file's pages.
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
        /// Told of what the overlay serves otherwise than asked (a file too large to relocate).
        public var log: @Sendable (String) -> Void

        public init(
            upperRoot: String, isolation: Isolation, consumerRoot: String,
            log: @escaping @Sendable (String) -> Void = { _ in }
        ) {
            self.upperRoot = upperRoot
            self.isolation = isolation
            self.consumerRoot = consumerRoot
            self.log = log
        }
    }

    /// What the overlay holds, for the mount's status.
    public struct Report: Sendable, Hashable, Codable {
        /// Inodes the kernel holds (the root aside): it follows the kernel's lookups, not what was ever created.
        public var inodes: Int
        public var openFiles: Int
    }

    typealias Space = OverlayInodes.Space

    let lower: ImageFileSystem
    let options: Options
    let owner: (uid: UInt32, gid: UInt32)
    let mounted = Int64(Date().timeIntervalSince1970)
    // Lock order: none; each is taken alone, never across a call into the lower, a reply or network I/O (`uppers`
    // is held while a new upper is created on local disk, once per upper, so its work directory is cleared once).
    let uppers = Mutex<[Space: UpperLayer]>([:])
    let inodes = Mutex(OverlayInodes())
    let handles = Mutex(OverlayHandles())
    let kernel = Mutex<(any KernelCache)?>(nil)
    let relocations = RelocationCache()
    let warnedOverLimit = Atomic(false)
    /// The upper root and the daemon's work directories in it, opened once at start.
    let upperRoot: DirectoryDescriptor
    let workDirectories: DirectoryDescriptor

    public init(lower: ImageFileSystem, options: Options, owner: (uid: UInt32, gid: UInt32)) throws(FSError) {
        self.lower = lower
        self.options = options
        self.owner = owner
        Allocator.keepLargeBlocksMapped
        if mkdir(options.upperRoot, 0o711) != 0 && errno != EEXIST {
            throw .unavailable(reason: "cannot create \(options.upperRoot): \(UpperLayer.lastError())")
        }
        // Only the daemon may change which uppers exist and where they lead: a directory it owns, which others
        // may traverse (to reach their own upper) but not change (`--upper` on a fresh tmpfs is 1777).
        upperRoot = try DirectoryDescriptor.open(options.upperRoot, owner: geteuid())
        if try upperRoot.status().st_mode & 0o7022 != 0, fchmod(upperRoot.fd, 0o711) != 0 {
            throw .unavailable(reason: "chmod 0711 \(options.upperRoot): \(UpperLayer.lastError())")
        }
        let daemon = (uid: geteuid(), gid: getegid())
        guard let works = try upperRoot.directory(UpperLayer.workDirectory, create: (0o700, daemon)) else {
            throw .unavailable(reason: "\(options.upperRoot)/\(UpperLayer.workDirectory) is not a directory: remove it")
        }
        try UpperLayer.restrict(works, to: daemon.uid)
        workDirectories = works
        // Uppers left by earlier mounts count for what names other callers may see (see `isCommon`).
        for name in (try? upperRoot.entries()) ?? [] {
            guard let space = Self.space(named: name, isolation: options.isolation),
                let info = upperRoot.status(name), Self.isDirectory(info)
            else { continue }
            _ = try? upper(space: space, owner: (info.st_uid, info.st_gid))
        }
    }

    public var report: Report {
        Report(inodes: inodes.withLock { $0.count }, openFiles: handles.withLock { $0.count })
    }

    // MARK: Uppers

    /// The upper a caller writes to, created on first use.
    func upper(for caller: Caller) throws(FSError) -> UpperLayer {
        try upper(space: space(of: caller), owner: (caller.uid, caller.gid))
    }

    /// The upper of `space`, which exists once an inode names it (its owner's first lookup created it).
    func upper(space: Space) throws(FSError) -> UpperLayer { try upper(space: space, owner: (space, space)) }

    private func upper(space: Space, owner writer: (uid: UInt32, gid: UInt32)) throws(FSError) -> UpperLayer {
        if let existing = uppers.withLock({ $0[space] }) { return existing }
        let shared = options.isolation == .shared
        let name = Self.upperName(isolation: options.isolation, uid: space)
        return try uppers.withLock { uppers throws(FSError) in
            if let existing = uppers[space] { return existing }
            // Created under the lock: a new layer clears its work directory, which must happen only once.
            let layer = try UpperLayer(
                name: name, in: upperRoot, works: workDirectories, owner: shared ? owner : writer)
            uppers[space] = layer
            return layer
        }
    }

    /// The directory under the upper root that holds what `uid` writes.
    public static func upperName(isolation: Isolation, uid: UInt32) -> String {
        isolation == .shared ? "shared" : String(uid)
    }

    static func space(named name: String, isolation: Isolation) -> Space? {
        isolation == .shared ? (name == "shared" ? UInt32.max : nil) : UInt32(name)
    }

    func space(of caller: Caller) -> Space { options.isolation == .shared ? UInt32.max : caller.uid }

    static func isDirectory(_ info: stat) -> Bool { info.st_mode & S_IFMT == S_IFDIR }

    // MARK: FileSystem: reading

    /// The lower's own inodes: the root's control directory and what is below it.
    private static func isControl(parent: UInt64, name: String) -> Bool {
        parent == ImageFileSystem.rootIno && name == ImageFileSystem.controlName
            || parent != ImageFileSystem.rootIno && parent < ImageFileSystem.firstTreeIno
    }

    public func lookup(parent: UInt64, name: String, caller: Caller) throws(FSError) -> Attributes {
        if Self.isControl(parent: parent, name: name) {
            return try lower.lookup(parent: parent, name: name, caller: caller)
        }
        if UpperLayer.isReserved(name) { throw .notFound }
        guard let resolved = try resolve(try directoryPath(parent, caller: caller) + [name], caller: caller) else {
            throw .notFound
        }
        return try reference(resolved, parent: parent, name: name, caller: caller)
    }

    public func forget(ino: UInt64, count: UInt64) {
        let compacted = inodes.withLock { table in
            let before = table.compactions
            table.forget(ino, count: count)
            return table.compactions != before
        }
        // After the kernel forgot most of the table, its freed memory goes back to the system.
        if compacted { Allocator.releaseFreePages() }
    }

    public func attributes(ino: UInt64, caller: Caller) throws(FSError) -> Attributes {
        try attributes(ino: ino, handle: nil, caller: caller)
    }

    /// An inode's attributes; through an open handle, those of what that handle reads or writes (a writer sees its
    /// own copy, a reader the version it opened). An upper file being written shows its newest writer's copy, so
    /// the writer's `fstat` (which names no handle) sees its own size; readers use direct I/O and read the version
    /// they opened in full whatever size `stat` shows.
    public func attributes(ino: UInt64, handle: UInt64?, caller: Caller) throws(FSError) -> Attributes {
        if ino != ImageFileSystem.rootIno && ino < ImageFileSystem.firstTreeIno {
            return try lower.attributes(ino: ino, caller: caller)
        }
        if let handle, let attributes = try handleAttributes(handle, ino: ino) { return attributes }
        switch try subject(of: ino) {
        case .directory(let path, let space):
            if path.isEmpty { return directoryAttributes(ino: ino, modified: mounted) }
            let upper: UpperLayer
            if let space { upper = try self.upper(space: space) } else { upper = try self.upper(for: caller) }
            guard let resolved = try resolve(path, in: upper), case .directory = resolved else { throw .notFound }
            return try attributes(of: resolved, ino: ino, caller: caller)
        case .lowerFile(let path, let node):
            switch try view(ofImageFile: node, path: path, caller: caller) {
            case .lowerFile(_, let current)? where current.ino == node.ino:
                return try attributes(of: .lowerFile(path: path, node: node), ino: ino, caller: caller)
            case .upperFile(let path, let info)?:
                return try upperAttributes(info, path: path, ino: ino, upper: upper(for: caller))
            default: throw .notFound
            }
        case .upperFile(let path, let space):
            let upper = try upper(space: space)
            if let fd = handles.withLock({ $0.unpublishedShadow(in: upper, at: path) }) {
                var info = stat()
                if fstat(fd, &info) == 0 { return try upperAttributes(info, path: path, ino: ino, upper: nil) }
            }
            guard let info = try upper.status(path) else { throw .notFound }
            return try upperAttributes(info, path: path, ino: ino, upper: upper)
        }
    }

    public func readLink(ino: UInt64, caller: Caller) throws(FSError) -> String {
        switch try subject(of: ino) {
        case .lowerFile(let path, let node):
            switch try view(ofImageFile: node, path: path, caller: caller) {
            case .upperFile(let path, _)?:
                guard let target = try upper(for: caller).readLink(path) else { throw .invalidArgument }
                return target
            case nil: throw .notFound
            default: return try lower.readLink(ino: node.ino, caller: caller)
            }
        case .upperFile(let path, let space):
            guard let target = try upper(space: space).readLink(path) else { throw .invalidArgument }
            return target
        case .directory: throw .invalidArgument
        }
    }

    public func listDirectory(ino: UInt64, caller: Caller) throws(FSError) -> [DirectoryEntry] {
        if ino != ImageFileSystem.rootIno && ino < ImageFileSystem.firstTreeIno {
            return try lower.listDirectory(ino: ino, caller: caller)
        }
        // Every top-level name is resolved below: all at once, after one prefetch of their metadata.
        if ino == ImageFileSystem.rootIno { try lower.load().resolveAll() }
        let path = try directoryPath(ino, caller: caller)
        let parent = ino == ImageFileSystem.rootIno ? ino : inodes.withLock { $0.names(of: ino)?.last?.parent } ?? ino
        var entries = [
            DirectoryEntry(ino: ino, name: ".", kind: .directory),
            DirectoryEntry(ino: parent, name: "..", kind: .directory),
        ]
        for name in try names(in: path, caller: caller) {
            guard let child = try resolve(path + [name], caller: caller) else { continue }
            entries.append(entry(child, name: name, parent: ino, caller: caller))
        }
        return entries
    }

    /// A listing's entry: its number if the kernel holds it, else the one it would get (listings hand the kernel
    /// no inode, so they add nothing to the table).
    private func entry(_ resolved: Resolved, name: String, parent: UInt64, caller: Caller) -> DirectoryEntry {
        let identity = identity(of: resolved, parent: parent, name: name, caller: caller)
        let kind: NodeKind
        let info: stat?
        switch resolved {
        case .directory(_, _, let upper):
            kind = .directory
            info = upper
        case .lowerFile(_, let node):
            kind = node.kind
            info = nil
        case .upperFile(_, let upper):
            kind = Self.attributes(upper, ino: 0).kind
            info = upper
        }
        // Upper entries nobody looked up have no number yet: their on-disk one, far from the table's.
        let fallback = info.map { UInt64($0.st_ino) | 1 << 62 } ?? 0
        return DirectoryEntry(ino: inodes.withLock { $0.peek(identity) } ?? fallback, name: name, kind: kind)
    }

    /// The names a directory shows this caller, sorted: the upper's, and the image's unless deleted or hidden.
    func names(in path: [String], caller: Caller) throws(FSError) -> [String] {
        guard case .directory(_, let lowerNode, let upperInfo)? = try resolve(path, caller: caller) else {
            throw .notDirectory
        }
        var names = Set<String>()
        if upperInfo != nil {
            let upper = try upper(for: caller)
            let (upperNames, whiteouts) = try upper.list(path)
            names.formUnion(upperNames)
            if let lowerNode, !(try upper.isOpaque(path)) {
                names.formUnion(lowerNode.listing.filter { !whiteouts.contains($0) })
            }
        } else if let lowerNode {
            names.formUnion(lowerNode.listing)
        }
        return names.sorted()
    }

    public func statistics() -> FileSystemStatistics {
        var info = statvfs()
        guard statvfs(options.upperRoot, &info) == 0 else { return lower.statistics() }
        return FileSystemStatistics(
            blockSize: UInt64(info.f_bsize), blocks: UInt64(info.f_blocks), freeBlocks: UInt64(info.f_bavail),
            files: UInt64(info.f_files), nameMax: UInt64(info.f_namemax))
    }
}
