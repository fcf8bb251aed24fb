import Foundation

/// Who asked: the credentials the kernel attached to a FUSE request.
public struct Caller: Sendable, Hashable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32

    public init(uid: UInt32, gid: UInt32, pid: Int32) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
}

public enum NodeKind: Sendable, Hashable {
    case directory
    case file
    case symlink
}

/// What `stat` reports for one inode.
public struct Attributes: Sendable, Hashable {
    public var ino: UInt64
    public var kind: NodeKind
    /// Permission bits only; the bridge adds the file-type bits.
    public var permissions: UInt32
    public var links: UInt32
    public var size: Int64
    public var uid: UInt32
    public var gid: UInt32
    public var modified: Int64
    /// The kernel must not cache these attributes (generated files whose size changes).
    public var isVolatile = false
    /// The kernel must not cache the name that led here: what a name means depends on who asks (per-user
    /// overlays) or may change under it.
    public var nameIsVolatile = false

    public init(
        ino: UInt64, kind: NodeKind, permissions: UInt32, links: UInt32 = 1, size: Int64, uid: UInt32, gid: UInt32,
        modified: Int64
    ) {
        self.ino = ino
        self.kind = kind
        self.permissions = permissions
        self.links = links
        self.size = size
        self.uid = uid
        self.gid = gid
        self.modified = modified
    }
}

public struct DirectoryEntry: Sendable, Hashable {
    public var ino: UInt64
    public var name: String
    public var kind: NodeKind

    public init(ino: UInt64, name: String, kind: NodeKind) {
        self.ino = ino
        self.name = name
        self.kind = kind
    }
}

/// How the kernel may cache an open file: image files never change, generated ones (status) do.
public struct OpenedFile: Sendable, Hashable {
    public var handle: UInt64
    public var keepCache: Bool
    public var directIO: Bool

    public init(handle: UInt64, keepCache: Bool, directIO: Bool) {
        self.handle = handle
        self.keepCache = keepCache
        self.directIO = directIO
    }
}

public struct FileSystemStatistics: Sendable, Hashable {
    public var blockSize: UInt64
    public var blocks: UInt64
    public var freeBlocks: UInt64
    public var files: UInt64
    public var nameMax: UInt64

    public init(blockSize: UInt64, blocks: UInt64, freeBlocks: UInt64, files: UInt64, nameMax: UInt64 = 255) {
        self.blockSize = blockSize
        self.blocks = blocks
        self.freeBlocks = freeBlocks
        self.files = files
        self.nameMax = nameMax
    }
}

/// The kernel's caches, as a filesystem may ask to correct them: a name it cached that now means something else.
public protocol KernelCache: AnyObject, Sendable {
    /// Makes the kernel forget the cached name `name` in directory `parent` (and the inode it led to, for that
    /// name). Synchronously: only where the kernel holds no lock on `parent` for the request being served (a
    /// `flush`); otherwise queued, done once the request in progress lets go of the directory.
    func invalidateEntry(parent: UInt64, name: String, synchronously: Bool)
}

/// The operations a FUSE adapter forwards. Inode 1 is the root, as in FUSE. Every method may be called
/// concurrently from libfuse worker threads; implementations block on I/O inline.
public protocol FileSystem: AnyObject, Sendable {
    func lookup(parent: UInt64, name: String, caller: Caller) throws(FSError) -> Attributes
    /// The kernel dropped `count` references to `ino` taken by lookups.
    func forget(ino: UInt64, count: UInt64)
    func attributes(ino: UInt64, caller: Caller) throws(FSError) -> Attributes
    /// The attributes the kernel asks for through an open handle (`fstat`, or a read checking the size): those of
    /// what that handle reads or writes, which may differ from the name's current file.
    func attributes(ino: UInt64, handle: UInt64?, caller: Caller) throws(FSError) -> Attributes
    func readLink(ino: UInt64, caller: Caller) throws(FSError) -> String
    /// The full listing of a directory, `.` and `..` first.
    func listDirectory(ino: UInt64, caller: Caller) throws(FSError) -> [DirectoryEntry]
    func open(ino: UInt64, flags: Int32, caller: Caller) throws(FSError) -> OpenedFile
    func read(handle: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(FSError) -> Int
    func release(handle: UInt64)
    /// The whole content of an open file when it lies in memory (mapped or held), valid until `release`: the FUSE
    /// bridge replies to reads straight from it, without first copying into a buffer. nil: use `read`.
    func contentBytes(handle: UInt64) -> UnsafeRawBufferPointer?
    func makeDirectory(parent: UInt64, name: String, mode: UInt32, caller: Caller) throws(FSError) -> Attributes
    func statistics() -> FileSystemStatistics

    func create(parent: UInt64, name: String, mode: UInt32, flags: Int32, caller: Caller) throws(FSError)
        -> (Attributes, OpenedFile)
    func write(handle: UInt64, offset: Int64, bytes: UnsafeRawBufferPointer) throws(FSError) -> Int
    func setAttributes(ino: UInt64, changes: AttributeChanges, handle: UInt64?, caller: Caller) throws(FSError)
        -> Attributes
    func removeFile(parent: UInt64, name: String, caller: Caller) throws(FSError)
    func removeDirectory(parent: UInt64, name: String, caller: Caller) throws(FSError)
    func rename(parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32, caller: Caller)
        throws(FSError)
    func makeSymlink(parent: UInt64, name: String, target: String, caller: Caller) throws(FSError) -> Attributes
    func makeLink(ino: UInt64, newParent: UInt64, newName: String, caller: Caller) throws(FSError) -> Attributes
    func synchronize(handle: UInt64) throws(FSError)
    /// A descriptor of the open file was closed (`close(2)` waits for this; `release` comes later, async).
    func flush(handle: UInt64) throws(FSError)
    /// Called once the kernel is connected, with what corrects its caches; valid until the session ends.
    func connect(kernel: any KernelCache)
}

/// What a `setattr` asks to change; nil fields stay as they are.
public struct AttributeChanges: Sendable, Hashable {
    public var permissions: UInt32?
    public var size: Int64?
    public var accessed: Int64?
    public var modified: Int64?

    public init(permissions: UInt32? = nil, size: Int64? = nil, accessed: Int64? = nil, modified: Int64? = nil) {
        self.permissions = permissions
        self.size = size
        self.accessed = accessed
        self.modified = modified
    }
}

/// A read-only filesystem refuses every change with `readOnly` (EROFS).
extension FileSystem {
    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32, caller: Caller) throws(FSError)
        -> (Attributes, OpenedFile)
    { throw .readOnly }
    public func write(handle: UInt64, offset: Int64, bytes: UnsafeRawBufferPointer) throws(FSError) -> Int {
        throw .readOnly
    }
    public func setAttributes(ino: UInt64, changes: AttributeChanges, handle: UInt64?, caller: Caller) throws(FSError)
        -> Attributes
    { throw .readOnly }
    public func removeFile(parent: UInt64, name: String, caller: Caller) throws(FSError) { throw .readOnly }
    public func removeDirectory(parent: UInt64, name: String, caller: Caller) throws(FSError) { throw .readOnly }
    public func rename(
        parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32, caller: Caller
    ) throws(FSError) { throw .readOnly }
    public func makeSymlink(parent: UInt64, name: String, target: String, caller: Caller) throws(FSError)
        -> Attributes
    { throw .readOnly }
    public func makeLink(ino: UInt64, newParent: UInt64, newName: String, caller: Caller) throws(FSError)
        -> Attributes
    { throw .readOnly }
    public func synchronize(handle: UInt64) throws(FSError) {}
    public func flush(handle: UInt64) throws(FSError) {}
}

extension FileSystem {
    public func contentBytes(handle: UInt64) -> UnsafeRawBufferPointer? { nil }

    public func attributes(ino: UInt64, handle: UInt64?, caller: Caller) throws(FSError) -> Attributes {
        try attributes(ino: ino, caller: caller)
    }

    public func connect(kernel: any KernelCache) {}
}
