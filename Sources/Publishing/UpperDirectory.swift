import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A directory of an upper, opened without following links; its entries are reached relative to its descriptor
/// (`openat`/`fstatat` with `O_NOFOLLOW`), so a user who swaps a name for a link between two calls redirects
/// nothing. Files are opened `O_NONBLOCK` (a FIFO or a device never blocks the open) and checked with `fstat`
/// on the descriptor opened, never by name; their bytes are read in bounded chunks.
///
/// Only a file its upper's writer owns, with one link, is read: where users can reach an upper on disk and the
/// kernel lets them hard-link files they do not own (`fs.protected_hardlinks=0`), a link to a root-only file
/// would otherwise be published, and signed, as their kernel.
final class UpperDirectory {
    enum Kind: Equatable {
        case missing, empty, other
        case regular(size: Int64)
        case refused(ReadFailure)
    }

    /// Why a file was not read.
    enum ReadFailure: Error, Equatable, CustomStringConvertible {
        case unopenable(Int32)
        case notRegular
        case linked(count: UInt64)
        case foreign(owner: UInt32, expected: UInt32)
        case tooLarge(size: Int64, limit: Int64)
        case io(Int32)

        var description: String {
            switch self {
            case .unopenable(let code): return "cannot be opened (\(String(cString: strerror(code))))"
            case .notRegular: return "is not a regular file"
            case .linked(let count):
                return "has \(count) hard links (a file linked from elsewhere is never published: copy it instead)"
            case .foreign(let owner, let expected):
                return "belongs to uid \(owner), not to uid \(expected) whose kernels these are"
            case .tooLarge(let size, let limit): return "is too large (\(size) bytes; the limit is \(limit))"
            case .io(let code): return "cannot be read (\(String(cString: strerror(code))))"
            }
        }

        /// Why a regular file with `info` is not one `owner` wrote through the mount, or `nil`.
        static func provenance(of info: stat, owner: UInt32) -> ReadFailure? {
            if info.st_nlink > 1 { return .linked(count: UInt64(info.st_nlink)) }
            if info.st_uid != owner { return .foreign(owner: info.st_uid, expected: owner) }
            return nil
        }
    }

    /// Bytes read or copied per call: what a read holds in memory at once.
    static let chunkBytes = 1 << 16

    let fd: Int32

    init?(path: String) {
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 { return nil }
    }

    private init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// The directory's owner, from its descriptor; `nil` when it cannot be read.
    var owner: UInt32? {
        var info = stat()
        return fstat(fd, &info) == 0 ? info.st_uid : nil
    }

    func subdirectory(_ name: String) -> UpperDirectory? {
        let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        return child < 0 ? nil : UpperDirectory(fd: child)
    }

    /// Entry names, `.` and `..` left out. A name that is not UTF-8 reads with U+FFFD in it, which `EntryName`
    /// refuses.
    func names() -> [String] {
        let copy = dup(fd)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            return []
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// What `name` is; a regular file `owner` did not write alone is `refused`.
    func kind(of name: String, owner: UInt32) -> Kind {
        var info = stat()
        guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return .missing }
        guard info.st_mode & S_IFMT == S_IFREG else { return .other }
        if let refusal = ReadFailure.provenance(of: info, owner: owner) { return .refused(refusal) }
        return info.st_size == 0 ? .empty : .regular(size: Int64(info.st_size))
    }

    /// The bytes of a regular file of `owner`'s of at most `limit` bytes.
    func contents(of name: String, owner: UInt32, limit: Int64) throws -> Data {
        var data = Data()
        _ = try read(name, owner: owner, limit: limit) { chunk in data.append(contentsOf: chunk) }
        return data
    }

    /// Streams a regular file of at most `limit` bytes, owned by `owner` and with one link, to `body`, a chunk at
    /// a time. Both are checked on the descriptor opened: a name swapped after a scan changes nothing.
    /// - Returns: whether the file is executable by its owner, group or others.
    /// - Throws: a `ReadFailure`, or what `body` throws.
    func read(_ name: String, owner: UInt32, limit: Int64, into body: (UnsafeRawBufferPointer) throws -> Void)
        throws -> Bool
    {
        let file = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard file >= 0 else { throw ReadFailure.unopenable(errno) }
        defer { close(file) }
        var info = stat()
        guard fstat(file, &info) == 0 else { throw ReadFailure.io(errno) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw ReadFailure.notRegular }
        if let refusal = ReadFailure.provenance(of: info, owner: owner) { throw refusal }
        guard Int64(info.st_size) <= limit else {
            throw ReadFailure.tooLarge(size: Int64(info.st_size), limit: limit)
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        var total: Int64 = 0
        while true {
            let n = Glibc.read(file, buffer.baseAddress, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw ReadFailure.io(errno) }
            if n == 0 { return info.st_mode & 0o111 != 0 }
            total += Int64(n)
            // The file may grow after the fstat: the limit holds for the bytes read.
            guard total <= limit else { throw ReadFailure.tooLarge(size: total, limit: limit) }
            try body(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
        }
    }
}

/// A file created exclusively (never through a link), written in order.
struct StagedFile: ~Copyable {
    let path: String
    let fd: Int32

    init(creating path: String, executable: Bool) throws(PublishingError) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, executable ? 0o755 : 0o644)
        guard fd >= 0 else { throw .io(operation: "create", path: path, errno) }
        self.path = path
    }

    deinit { close(fd) }

    func write(_ bytes: UnsafeRawBufferPointer) throws(PublishingError) {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .io(operation: "write", path: path, errno) }
            offset += n
        }
    }

    /// Sets the mode the file is created with, once its source's is known.
    func setExecutable(_ executable: Bool) throws(PublishingError) {
        guard fchmod(fd, executable ? 0o755 : 0o644) == 0 else { throw .io(operation: "chmod", path: path, errno) }
    }
}
