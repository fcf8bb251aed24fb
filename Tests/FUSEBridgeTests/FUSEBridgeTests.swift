import Glibc
import ImageFS
import Testing

@testable import FUSEBridge

/// The bridge's pure parts: what an error becomes, how attributes and changes cross into C types, what the kernel
/// is told it may cache, how a listing is packed and what libfuse is given to parse. No mount.
@Suite struct FUSEBridgeTests {
    @Test(arguments: [
        (FSError.notFound, ENOENT), (.notDirectory, ENOTDIR), (.isDirectory, EISDIR), (.exists, EEXIST),
        (.readOnly, EROFS), (.notEmpty, ENOTEMPTY), (.permissionDenied, EACCES), (.invalidArgument, EINVAL),
        (.badHandle, EBADF), (.crossDevice, EXDEV), (.unavailable(reason: "registry down"), EIO),
    ])
    func eachErrorBecomesItsErrno(error: FSError, code: Int32) {
        #expect(error.errno == code)
        // Only failures to get content are worth a log line: a lookup of a missing name is normal traffic.
        #expect(error.isNoteworthy == (code == EIO))
    }

    @Test func attributesBecomeAStatWithTheFileTypeBits() {
        let file = Attributes(
            ino: 1 << 40, kind: .file, permissions: 0o4755, links: 3, size: 1025, uid: 1000, gid: 100,
            modified: 1_700_000_000)
        let st = stat(file)
        #expect(st.st_ino == 1 << 40)
        #expect(st.st_mode == S_IFREG | 0o4755)
        #expect(st.st_nlink == 3 && st.st_size == 1025 && st.st_blocks == 3 && st.st_blksize == 4096)
        #expect(st.st_uid == 1000 && st.st_gid == 100)
        #expect(st.st_mtim.tv_sec == 1_700_000_000 && st.st_ctim.tv_sec == 1_700_000_000)
        #expect(
            stat(Attributes(ino: 2, kind: .directory, permissions: 0o777, size: 0, uid: 0, gid: 0, modified: 0))
                .st_mode == S_IFDIR | 0o777)
        #expect(NodeKind.symlink.typeBits == S_IFLNK)
    }

    /// `FUSE_SET_ATTR_*` from fuse_lowlevel.h (only the bridge imports libfuse's module).
    static let (setMode, setSize, setAtime, setMtime, setMtimeNow): (Int32, Int32, Int32, Int32, Int32) =
        (1 << 0, 1 << 3, 1 << 4, 1 << 5, 1 << 8)

    @Test func setattrTakesOnlyTheFieldsTheKernelNamed() {
        var attr = stat()
        attr.st_mode = S_IFREG | 0o640
        attr.st_size = 99
        attr.st_atim.tv_sec = 10
        attr.st_mtim.tv_sec = 20
        #expect(AttributeChanges(attr: attr, toSet: Self.setSize) == AttributeChanges(size: 99))
        #expect(AttributeChanges(attr: attr, toSet: Self.setMode) == AttributeChanges(permissions: 0o640))
        #expect(
            AttributeChanges(attr: attr, toSet: Self.setAtime | Self.setMtime)
                == AttributeChanges(accessed: 10, modified: 20))
        let now = AttributeChanges(attr: attr, toSet: Self.setMtime | Self.setMtimeNow)
        #expect(now.accessed == nil && now.modified.map { abs($0 - Int64(time(nil))) <= 5 } == true)
        #expect(AttributeChanges(attr: attr, toSet: 0) == AttributeChanges())
    }

    @Test func theKernelCachesWhatIsStableForTheConfiguredTime() {
        let context = OperationContext(fileSystem: Unmounted(), cacheTimeout: 60, traceErrors: false, log: { _ in })
        var attributes = Attributes(ino: 20, kind: .file, permissions: 0o644, size: 1, uid: 0, gid: 0, modified: 0)
        var entry = context.entry(attributes)
        #expect(entry.ino == 20 && entry.generation == 1 && entry.attr_timeout == 60 && entry.entry_timeout == 60)
        attributes.nameIsVolatile = true
        entry = context.entry(attributes)
        #expect(entry.attr_timeout == 60 && entry.entry_timeout == 0)
        attributes.isVolatile = true
        attributes.nameIsVolatile = false
        entry = context.entry(attributes)
        #expect(
            entry.attr_timeout == 0 && entry.entry_timeout == 0, "a name leading to changing attributes is not kept")
    }

    /// One record as the kernel reads it: `struct fuse_dirent` (ino, off, namelen, type, name, padded to 8).
    struct Record: Equatable {
        var ino: UInt64
        var next: UInt64
        var type: UInt32
        var name: String
    }

    static func records(_ bytes: UnsafeRawBufferPointer) -> [Record] {
        var records: [Record] = []
        var at = 0
        while at < bytes.count {
            let length = Int(bytes.loadUnaligned(fromByteOffset: at + 16, as: UInt32.self))
            let name = String(decoding: bytes[(at + 24)..<(at + 24 + length)], as: UTF8.self)
            records.append(
                Record(
                    ino: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self),
                    next: bytes.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self),
                    type: bytes.loadUnaligned(fromByteOffset: at + 20, as: UInt32.self), name: name))
            at += (24 + length + 7) & ~7
        }
        return records
    }

    @Test func aListingIsPackedAsFarAsItFitsAndResumesWhereItStopped() {
        let entries = [
            DirectoryEntry(ino: 1, name: ".", kind: .directory), DirectoryEntry(ino: 1, name: "..", kind: .directory),
            DirectoryEntry(ino: 17, name: "KEY", kind: .directory),
            DirectoryEntry(ino: 40, name: "add_kernel.cubin", kind: .file),
            DirectoryEntry(ino: 41, name: "link", kind: .symlink),
        ]
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 96, alignment: 8)
        defer { buffer.deallocate() }
        // 24-byte headers: ".", ".." and "KEY" take 32 bytes each, so three fit in 96.
        var used = OperationContext.pack(entries, from: 0, into: buffer)
        #expect(
            Self.records(UnsafeRawBufferPointer(rebasing: buffer[0..<used]))
                == [
                    Record(ino: 1, next: 1, type: 4, name: "."), Record(ino: 1, next: 2, type: 4, name: ".."),
                    Record(ino: 17, next: 3, type: 4, name: "KEY"),
                ])
        used = OperationContext.pack(entries, from: 3, into: buffer)
        #expect(
            Self.records(UnsafeRawBufferPointer(rebasing: buffer[0..<used]))
                == [
                    Record(ino: 40, next: 4, type: 8, name: "add_kernel.cubin"),
                    Record(ino: 41, next: 5, type: 10, name: "link"),
                ])
        #expect(
            OperationContext.pack(entries, from: 5, into: buffer) == 0, "past the end: an empty reply ends the listing")
        let tiny = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
        defer { tiny.deallocate() }
        #expect(OperationContext.pack(entries, from: 0, into: tiny) == 0)
    }

    @Test func libfuseIsGivenTheMountOptionsWithTheSourceNameEscaped() {
        var options = FUSESession.Options(
            mountpoint: "/mnt/triton", fsName: "mcvfs#quay.io/org/cache", allowOther: false)
        #expect(
            options.arguments == ["mcvfs", "-o", "fsname=mcvfs#quay.io/org/cache,subtype=mcvfs,default_permissions"])
        options.allowOther = true
        options.fsName = #"odd,name\x"#
        #expect(
            options.arguments == ["mcvfs", "-o", #"fsname=odd\,name\\x,subtype=mcvfs,default_permissions,allow_other"#])
    }

    @Test func sessionErrorsSayWhatToCheck() {
        #expect(FUSESession.SessionError.create.description.contains("/dev/fuse"))
        #expect(FUSESession.SessionError.mount("/mnt/x").description.contains("/mnt/x"))
    }
}

/// A filesystem the tests never call into: the context only needs one to exist.
final class Unmounted: FileSystem {
    func lookup(parent: UInt64, name: String, caller: Caller) throws(FSError) -> Attributes { throw .notFound }
    func forget(ino: UInt64, count: UInt64) {}
    func attributes(ino: UInt64, caller: Caller) throws(FSError) -> Attributes { throw .notFound }
    func readLink(ino: UInt64, caller: Caller) throws(FSError) -> String { throw .notFound }
    func listDirectory(ino: UInt64, caller: Caller) throws(FSError) -> [DirectoryEntry] { throw .notFound }
    func open(ino: UInt64, flags: Int32, caller: Caller) throws(FSError) -> OpenedFile { throw .notFound }
    func read(handle: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(FSError) -> Int {
        throw .badHandle
    }
    func release(handle: UInt64) {}
    func makeDirectory(parent: UInt64, name: String, mode: UInt32, caller: Caller) throws(FSError) -> Attributes {
        throw .readOnly
    }
    func statistics() -> FileSystemStatistics {
        FileSystemStatistics(blockSize: 4096, blocks: 0, freeBlocks: 0, files: 0)
    }
}
