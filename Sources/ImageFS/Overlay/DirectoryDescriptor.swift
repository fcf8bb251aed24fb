import Foundation
import Glibc

/// A directory held open by descriptor, and the only way the daemon touches a tree a user can write to.
///
/// Every operation is relative to the descriptor and names one component: no `/` in a name, and no final link
/// ever followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`; `unlinkat` and `renameat` never follow one). A user may
/// swap any entry of their tree for a link at any moment; what the daemon holds stays the directory it checked
/// when it opened it (filepath-securejoin's `OpenInRoot`, libfuse `passthrough_hp.cc`'s per-inode descriptors).
/// Files open non-blocking, so a FIFO a user planted never parks a FUSE worker thread.
public final class DirectoryDescriptor: Sendable {
    public let fd: Int32
    /// For messages only: the path it had when opened, which a user may since have changed.
    public let path: String

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Opens an absolute path whose parents only root can change, refusing a link at its last component.
    /// - Parameter owner: the uid it must belong to; nil accepts any owner.
    /// - Throws: `FSError.unavailable` naming the path when it is missing, not a directory, a link, or owned by
    ///   someone else.
    public static func open(_ path: String, owner: UInt32? = nil) throws(FSError) -> DirectoryDescriptor {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .unavailable(reason: "open directory \(path): \(lastError())") }
        let directory = DirectoryDescriptor(fd: fd, path: path)
        try directory.check(owner: owner)
        return directory
    }

    /// Fails unless this is a directory owned by `owner` (any owner when nil).
    func check(owner: UInt32?) throws(FSError) {
        let info = try status()
        if info.st_mode & S_IFMT != S_IFDIR { throw .unavailable(reason: "\(path) is not a directory") }
        if let owner, info.st_uid != owner {
            throw .unavailable(reason: "\(path) belongs to uid \(info.st_uid), not \(owner): remove or chown it")
        }
    }

    /// The directory's own status.
    func status() throws(FSError) -> stat {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .unavailable(reason: "fstat \(path): \(Self.lastError())") }
        return info
    }

    /// The status of entry `name` itself (a link is reported as the link); nil when there is none.
    public func status(_ name: String) -> stat? {
        var info = stat()
        return fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 ? info : nil
    }

    /// Opens subdirectory `name`; nil when it is missing, a link or not a directory.
    /// - Parameter create: mode and owner to create it with when missing.
    public func directory(_ name: String, create: (mode: UInt32, owner: (uid: UInt32, gid: UInt32))? = nil)
        throws(FSError)
        -> DirectoryDescriptor?
    {
        var next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if next < 0 && errno == ENOENT, let create {
            if mkdirat(fd, name, create.mode) != 0 && errno != EEXIST { throw Self.error(errno, "mkdir", name) }
            // Opened before it is chowned: a link swapped in after mkdirat is refused by O_NOFOLLOW, and fchown
            // changes what was opened, never what a name points to.
            next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next >= 0 && fchown(next, create.owner.uid, create.owner.gid) != 0 {
                let code = errno
                close(next)
                throw Self.error(code, "chown", name)
            }
        }
        guard next >= 0 else {
            if errno == ENOENT || errno == ENOTDIR || errno == ELOOP { return nil }
            throw Self.error(errno, "open", name)
        }
        return DirectoryDescriptor(fd: next, path: path + "/" + name)
    }

    /// Opens regular file `name` (never through a final link, never blocking on a FIFO); `O_CREAT` with `mode`.
    /// - Returns: the descriptor, or the errno of the failure (`EINVAL` for a FIFO, a device, a socket).
    public func openFile(_ name: String, flags: Int32, mode: UInt32 = 0o600) -> Result<Int32, Errno> {
        let file = openat(self.fd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode)
        guard file >= 0 else { return .failure(Errno(errno == ENXIO ? EINVAL : errno)) }
        var info = stat()
        guard fstat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(file)
            return .failure(Errno(EINVAL))
        }
        // Reads and writes of a regular file ignore O_NONBLOCK; it only mattered for the open itself.
        _ = fcntl(file, F_SETFL, fcntl(file, F_GETFL) & ~O_NONBLOCK)
        return .success(file)
    }

    /// What `read(_:limit:)` found.
    enum Bounded: Equatable {
        case bytes(Data)
        /// A regular file larger than the limit (nothing of it was read), or one that grew while it was read.
        case tooLarge(size: Int64)
        /// `skipping` said the content was not needed.
        case skipped
    }

    /// The content of regular file `name`, read only when it holds at most `limit` bytes: a user-controlled
    /// file costs the daemon at most `limit` bytes of memory, whatever size it claims or grows to meanwhile.
    /// - Parameter skipping: told the status of the file opened, before anything is read; true skips the read (a
    ///   caller that already holds what came of this version of the file).
    /// - Throws: `FSError` for a missing entry, a link, or anything but a regular file (`invalidArgument`).
    func read(_ name: String, limit: Int, skipping: (stat) -> Bool = { _ in false }) throws(FSError) -> Bounded {
        let file: Int32
        switch openFile(name, flags: O_RDONLY) {
        case .success(let fd): file = fd
        case .failure(let error): throw Self.error(error.code, "open", name)
        }
        defer { close(file) }
        var info = stat()
        guard fstat(file, &info) == 0 else { throw Self.error(errno, "fstat", name) }
        if info.st_size > limit { return .tooLarge(size: Int64(info.st_size)) }
        if skipping(info) { return .skipped }
        // One byte more than its size tells a file that grew since fstat: served as it is, like a large one.
        var buffer = Data(count: Int(info.st_size) + 1)
        var total = 0
        while total < buffer.count {
            let n = buffer.withUnsafeMutableBytes {
                pread(file, $0.baseAddress! + total, $0.count - total, off_t(total))
            }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Self.error(errno, "read", name) }
            if n == 0 { break }
            total += n
        }
        if total > info.st_size { return .tooLarge(size: Int64(total)) }
        return .bytes(buffer.prefix(total))
    }

    func makeDirectory(_ name: String, mode: UInt32) -> Errno? {
        mkdirat(fd, name, mode) == 0 ? nil : Errno(errno)
    }

    func makeSymlink(_ name: String, target: String) -> Errno? {
        symlinkat(target, fd, name) == 0 ? nil : Errno(errno)
    }

    /// Changes the owner of entry `name` itself, a link included (never what it points to).
    func changeOwner(_ name: String, to owner: (uid: UInt32, gid: UInt32)) -> Errno? {
        fchownat(fd, name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) == 0 ? nil : Errno(errno)
    }

    /// Removes entry `name` (a directory with `directory`); a link is removed itself, never followed.
    func remove(_ name: String, directory: Bool = false) -> Errno? {
        unlinkat(fd, name, directory ? AT_REMOVEDIR : 0) == 0 ? nil : Errno(errno)
    }

    /// Moves entry `name` to `target` in `destination` (`flags`: `renameat2`'s).
    func rename(_ name: String, to destination: DirectoryDescriptor, _ target: String, flags: UInt32 = 0) -> Errno? {
        renameat2(fd, name, destination.fd, target, flags) == 0 ? nil : Errno(errno)
    }

    /// A hard link `target` in `destination` to entry `name` (never to what a link points to).
    func link(_ name: String, to destination: DirectoryDescriptor, _ target: String) -> Errno? {
        linkat(fd, name, destination.fd, target, 0) == 0 ? nil : Errno(errno)
    }

    public func readLink(_ name: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlinkat(fd, name, &buffer, buffer.count - 1)
        return n < 0 ? nil : String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The names of its entries, `.` and `..` excluded.
    public func entries() throws(FSError) -> [String] {
        // A description of its own (not a `dup`, which shares the offset): threads list one directory at once.
        let copy = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            throw Self.error(errno, "list", ".")
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// An errno, for the calls whose failure the caller maps itself.
    public struct Errno: Error, Equatable {
        public var code: Int32
        init(_ code: Int32) { self.code = code }
    }

    static func lastError() -> String { String(cString: strerror(errno)) }

    /// The overlay's error for a failed call on entry `name`.
    static func error(_ code: Int32, _ operation: String, _ name: String) -> FSError {
        switch code {
        case ENOENT: return .notFound
        case EEXIST: return .exists
        case ENOTEMPTY: return .notEmpty
        case ENOTDIR: return .notDirectory
        case EISDIR: return .isDirectory
        case EACCES, EPERM: return .permissionDenied
        case EINVAL, ELOOP: return .invalidArgument
        default: return .unavailable(reason: "\(operation) \(name): \(String(cString: strerror(code)))")
        }
    }
}

/// `renameat2` is not in Swift's Glibc overlay; glibc has exported it since 2.28.
private let renameat2: @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32 = {
    unsafeBitCast(
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2")!,
        to: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32).self)
}()
