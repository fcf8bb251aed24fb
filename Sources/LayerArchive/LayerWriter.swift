import CArchive
import Foundation

/// Writes image layers reproducibly: the same entries give the same bytes, on any machine and at any time, so
/// pushing the same cache twice gives the same digests (and a registry that has the blob already skips it).
///
/// The tar stream is POSIX pax ("restricted": plain ustar headers unless a name needs an extended header), with
/// entries in byte-wise path order, mtime 0, owner 0:0 with empty user and group names, no atime/ctime records and
/// normalised modes (0755 directories; 0755 or 0644 files by their executable bit). Compression runs as a second
/// pass over the finished tar (libarchive's `raw` format), so the uncompressed digest (the config's `diff_id`) and
/// the compressed one each come from one stream: gzip without a timestamp or file name in its header at a fixed
/// level, zstd single-threaded at a fixed level.
public enum LayerWriter {
    public enum Compression: String, Sendable, CaseIterable {
        case none = "tar"
        case gzip
        case zstd
    }

    /// One entry to archive. Paths are relative, `/`-separated, without `.` or `..` components.
    public struct Entry: Sendable, Hashable {
        public enum Content: Sendable, Hashable {
            case directory
            /// A regular file read from disk at write time; `size` is what the caller saw when scanning, and a
            /// file that changed size since fails the write rather than producing a layer that lies.
            case file(sourcePath: String, size: Int64)
            case bytes(Data)
            /// A relative symlink that stays inside the layer (the caller checks).
            case symlink(target: String)
        }

        public var path: String
        public var content: Content
        public var executable: Bool

        public init(path: String, content: Content, executable: Bool = false) {
            self.path = path
            self.content = content
            self.executable = executable
        }

        public static func directory(_ path: String) -> Entry { Entry(path: path, content: .directory) }

        var mode: UInt32 {
            switch content {
            case .directory: return 0o755
            case .symlink: return 0o777
            case .file, .bytes: return executable ? 0o755 : 0o644
            }
        }
    }

    /// Gzip level: zlib's default, a fixed choice so the bytes never depend on a library's default.
    public static let gzipLevel = 6
    public static let zstdLevel = 3

    /// Writes the tar stream of `entries` (sorted here; duplicates refused) into `sink`.
    ///
    /// - Throws: `TarError.corrupt` for a duplicate path or a source file that changed, `.archive` for libarchive
    ///   failures, or whatever `sink` threw.
    public static func writeTar(
        _ entries: [Entry], to sink: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let sorted = entries.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        try writeTar(inOrder: sorted, to: sink)
    }

    /// Writes the tar stream of `entries` in the order given (duplicates refused).
    static func writeTar(
        inOrder sorted: [Entry], to sink: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        var seen = Set<String>()
        for entry in sorted where !seen.insert(entry.path).inserted {
            throw TarError.corrupt(path: entry.path, reason: "the layer would hold this path twice")
        }
        let writer = try ArchiveWriter(sink: sink)
        try writer.check(archive_write_set_format_pax_restricted(writer.handle), "set_format_pax_restricted")
        try writer.check(archive_write_add_filter_none(writer.handle), "add_filter_none")
        try writer.open()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        for entry in sorted {
            try writer.add(entry, buffer: buffer)
        }
        try writer.close()
    }

    /// Compresses the file at `path` (a tar written by `writeTar`) into `sink`.
    public static func compress(
        file path: String, as compression: Compression, to sink: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let writer = try ArchiveWriter(sink: sink)
        try writer.check(archive_write_set_format_raw(writer.handle), "set_format_raw")
        switch compression {
        case .none:
            try writer.check(archive_write_add_filter_none(writer.handle), "add_filter_none")
        case .gzip:
            try writer.check(archive_write_add_filter_gzip(writer.handle), "add_filter_gzip")
            // No modification time in the gzip header (the default stores the current time).
            try writer.check(
                archive_write_set_filter_option(writer.handle, "gzip", "timestamp", nil), "gzip:!timestamp")
            try writer.check(
                archive_write_set_filter_option(writer.handle, "gzip", "compression-level", "\(gzipLevel)"),
                "gzip:compression-level")
        case .zstd:
            try writer.check(archive_write_add_filter_zstd(writer.handle), "add_filter_zstd")
            try writer.check(
                archive_write_set_filter_option(writer.handle, "zstd", "compression-level", "\(zstdLevel)"),
                "zstd:compression-level")
        }
        try writer.open()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TarError.store(.io(operation: "open", path: path, errno: errno)) }
        defer { close(fd) }
        let entry = archive_entry_new()
        defer { archive_entry_free(entry) }
        archive_entry_set_pathname(entry, "layer.tar")
        archive_entry_set_filetype(entry, ArchiveReader.ifreg)
        try writer.check(archive_write_header(writer.handle, entry), "write raw header")
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw TarError.store(.io(operation: "read", path: path, errno: errno))
            }
            if n == 0 { break }
            try writer.writeData(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
        }
        try writer.close()
    }
}

/// Owns a libarchive write handle whose output goes to a Swift closure; the only place a write `archive *` exists.
private final class ArchiveWriter {
    let handle: OpaquePointer
    private let output: Output
    private var closed = false

    /// Carries the sink into libarchive's C callback, and the sink's error back out of it.
    final class Output {
        let sink: (UnsafeRawBufferPointer) throws -> Void
        var error: (any Error)?
        init(sink: @escaping (UnsafeRawBufferPointer) throws -> Void) { self.sink = sink }
    }

    init(sink: @escaping (UnsafeRawBufferPointer) throws -> Void) throws(TarError) {
        guard let handle = archive_write_new() else {
            throw TarError.archive(operation: "archive_write_new", message: "out of memory", errno: ENOMEM)
        }
        self.handle = handle
        self.output = Output(sink: sink)
        // No padding after the last block: a compressed stream followed by zeros is not what was hashed elsewhere,
        // and the tar's own end-of-archive blocks are written regardless.
        archive_write_set_bytes_in_last_block(handle, 1)
    }

    deinit {
        if !closed { archive_write_close(handle) }
        archive_write_free(handle)
    }

    func check(_ code: Int32, _ operation: String) throws {
        if code >= ARCHIVE_WARN { return }
        if let error = output.error { throw error }
        let message = archive_error_string(handle).map { String(cString: $0) } ?? "error \(code)"
        throw TarError.archive(operation: operation, message: message, errno: archive_errno(handle))
    }

    func open() throws {
        let context = Unmanaged.passUnretained(output).toOpaque()
        try check(archive_write_open2(handle, context, nil, writeCallback, nil, nil), "open")
    }

    func close() throws {
        closed = true
        try check(archive_write_close(handle), "close")
    }

    func writeData(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        let n = archive_write_data(handle, base, bytes.count)
        if n < 0 { try check(Int32(n), "write data") }
        if let error = output.error { throw error }
    }

    func add(_ item: LayerWriter.Entry, buffer: UnsafeMutableRawBufferPointer) throws {
        guard let entry = archive_entry_new() else {
            throw TarError.archive(operation: "archive_entry_new", message: "out of memory", errno: ENOMEM)
        }
        defer { archive_entry_free(entry) }
        archive_entry_copy_pathname(entry, item.path)
        archive_entry_set_perm(entry, item.mode)
        archive_entry_set_mtime(entry, 0, 0)
        archive_entry_set_uid(entry, 0)
        archive_entry_set_gid(entry, 0)
        switch item.content {
        case .directory:
            archive_entry_set_filetype(entry, ArchiveReader.ifdir)
            archive_entry_set_size(entry, 0)
            try check(archive_write_header(handle, entry), "write header \(item.path)")
        case .symlink(let target):
            archive_entry_set_filetype(entry, ArchiveReader.iflnk)
            archive_entry_copy_symlink(entry, target)
            archive_entry_set_size(entry, 0)
            try check(archive_write_header(handle, entry), "write header \(item.path)")
        case .bytes(let data):
            archive_entry_set_filetype(entry, ArchiveReader.ifreg)
            archive_entry_set_size(entry, la_int64_t(data.count))
            try check(archive_write_header(handle, entry), "write header \(item.path)")
            try data.withUnsafeBytes { try writeData($0) }
        case .file(let source, let size):
            archive_entry_set_filetype(entry, ArchiveReader.ifreg)
            archive_entry_set_size(entry, la_int64_t(size))
            let fd = Glibc.open(source, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw TarError.store(.io(operation: "open", path: source, errno: errno)) }
            defer { Glibc.close(fd) }
            var info = stat()
            guard fstat(fd, &info) == 0 else {
                throw TarError.store(.io(operation: "fstat", path: source, errno: errno))
            }
            guard info.st_mode & S_IFMT == S_IFREG else {
                throw TarError.corrupt(path: source, reason: "no longer a regular file")
            }
            guard Int64(info.st_size) == size else {
                throw TarError.corrupt(
                    path: source, reason: "changed size while packing (\(size) -> \(info.st_size) bytes)")
            }
            try check(archive_write_header(handle, entry), "write header \(item.path)")
            var written: Int64 = 0
            while written < size {
                let n = read(fd, buffer.baseAddress, min(buffer.count, Int(size - written)))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw TarError.store(.io(operation: "read", path: source, errno: errno))
                }
                if n == 0 { throw TarError.corrupt(path: source, reason: "shrank while packing") }
                try writeData(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                written += Int64(n)
            }
        }
        try check(archive_write_finish_entry(handle), "finish entry \(item.path)")
    }
}

/// libarchive's output callback: hands each block to the Swift sink; an error it throws is kept for `check`.
private func writeCallback(
    _ archive: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ buffer: UnsafeRawPointer?, _ length: Int
) -> la_ssize_t {
    guard let context else { return -1 }
    let output = Unmanaged<ArchiveWriter.Output>.fromOpaque(context).takeUnretainedValue()
    do {
        try output.sink(UnsafeRawBufferPointer(start: buffer, count: length))
        return la_ssize_t(length)
    } catch {
        output.error = error
        return -1
    }
}
