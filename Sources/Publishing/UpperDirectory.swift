import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A directory of an upper, opened without following links; its entries are reached relative to its descriptor
/// (`openat`/`fstatat` with `O_NOFOLLOW`), so a user who swaps a name for a link between two calls redirects
/// nothing. Files are opened `O_NONBLOCK` (a FIFO or a device never blocks the open) and checked with `fstat`
/// on the descriptor opened, never by name; their bytes are read in bounded chunks, never more than the size
/// they had when opened (`OpenedFile`).
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

    /// Opens a regular file of `owner`'s with one link and at most `limit` bytes, all checked on the descriptor
    /// opened: a name swapped after a scan changes nothing. The one way a file of an upper is read.
    func openFile(_ name: String, owner: UInt32, limit: Int64) throws(ReadFailure) -> OpenedFile {
        try OpenedFile(name, in: self, owner: owner, limit: limit)
    }

    /// A regular file of an upper, opened `O_NOFOLLOW | O_NONBLOCK` relative to its directory's descriptor and
    /// checked with `fstat` on its own: a regular file (never a link, FIFO or device), its writer's (`owner`), with
    /// one link, within a limit. Its bytes are read in bounded chunks, never more than `size`, the size it had
    /// when opened: a writer that keeps appending cannot make a read grow past what was checked.
    final class OpenedFile {
        private let fd: Int32
        /// Its size when opened, within the limit it was opened with: what a read returns at most.
        let size: Int64
        /// Whether it is executable by its owner, group or others.
        let isExecutable: Bool
        /// What is left to read of `size`.
        private var left: Int64

        fileprivate init(_ name: String, in directory: UpperDirectory, owner: UInt32, limit: Int64)
            throws(ReadFailure)
        {
            fd = openat(directory.fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else { throw .unopenable(errno) }
            var info = stat()
            guard fstat(fd, &info) == 0 else {
                let code = errno
                close(fd)
                throw .io(code)
            }
            let failure: ReadFailure? =
                if info.st_mode & S_IFMT != S_IFREG {
                    .notRegular
                } else if let refusal = ReadFailure.provenance(of: info, owner: owner) {
                    refusal
                } else if Int64(info.st_size) > limit {
                    .tooLarge(size: Int64(info.st_size), limit: limit)
                } else {
                    nil
                }
            if let failure {
                close(fd)
                throw failure
            }
            size = Int64(info.st_size)
            left = size
            isExecutable = info.st_mode & 0o111 != 0
        }

        deinit { close(fd) }

        /// All its bytes (at most `size`).
        func readAll() throws(ReadFailure) -> Data {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: UpperDirectory.chunkBytes, alignment: 16)
            defer { buffer.deallocate() }
            var data = Data()
            while true {
                let n = try next(into: buffer)
                if n == 0 { return data }
                data.append(contentsOf: buffer[..<n])
            }
        }

        /// Streams its bytes (at most `size`) to `body`, a chunk of at most `chunkBytes` at a time.
        /// - Throws: a `ReadFailure`, or what `body` throws.
        func stream(into body: (UnsafeRawBufferPointer) throws -> Void) throws {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: UpperDirectory.chunkBytes, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let n = try next(into: buffer)
                if n == 0 { return }
                try body(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            }
        }

        /// Reads the next chunk into `buffer`: its length, 0 once `size` bytes are read or the file ends.
        private func next(into buffer: UnsafeMutableRawBufferPointer) throws(ReadFailure) -> Int {
            while left > 0 {
                let n = Glibc.read(fd, buffer.baseAddress, Int(min(Int64(buffer.count), left)))
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw .io(errno) }
                left -= Int64(n)
                return n
            }
            return 0
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
