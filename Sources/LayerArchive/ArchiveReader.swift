import CArchive
import Foundation

/// Owns a libarchive read handle over one file; the only place `archive *` exists. Internal: no C type leaves
/// this module.
final class ArchiveReader {
    private let handle: OpaquePointer
    private var entry: OpaquePointer?
    let path: String
    /// The stream a reader opened with `init(source:)` pulls from; kept alive for libarchive's callback.
    private let source: ArchiveSource?

    /// What libarchive reported about the current header, converted to Swift values.
    struct Header {
        var rawPath: String?
        var fileType: UInt32
        var permissions: UInt32
        var size: Int64?
        var mtime: Int64
        var symlink: String?
        var hardlink: String?
        /// Offset of the header in the decompressed stream.
        var position: Int64
    }

    static let ifmt: UInt32 = 0o170000
    static let ifreg: UInt32 = 0o100000
    static let ifdir: UInt32 = 0o040000
    static let iflnk: UInt32 = 0o120000

    /// Opens `path`, detecting compression (any filter libarchive knows: gzip, zstd, xz, ...) and tar dialect
    /// (ustar, pax, GNU) from the content.
    init(path: String) throws(TarError) {
        self.handle = try Self.makeHandle()
        self.path = path
        self.source = nil
        try configure()
        try check(archive_read_open_filename(handle, path, 1 << 16), "open \(path)")
    }

    /// Reads an archive streamed by `source` (any filter libarchive knows, as for a file), on the calling thread:
    /// every read blocks until `source` has bytes.
    init(source: ArchiveSource, name: String) throws(TarError) {
        self.handle = try Self.makeHandle()
        self.path = name
        self.source = source
        try configure()
        let context = Unmanaged.passUnretained(source as AnyObject).toOpaque()
        try check(archive_read_open(handle, context, nil, archiveSourceRead, nil), "open \(name)")
    }

    private static func makeHandle() throws(TarError) -> OpaquePointer {
        guard let handle = archive_read_new() else {
            throw TarError.archive(operation: "archive_read_new", message: "out of memory", errno: ENOMEM)
        }
        return handle
    }

    private func configure() throws(TarError) {
        try check(archive_read_support_filter_all(handle), "support_filter_all")
        try check(archive_read_support_format_tar(handle), "support_format_tar")
        try check(archive_read_support_format_gnutar(handle), "support_format_gnutar")
        try check(archive_read_support_format_empty(handle), "support_format_empty")
    }

    deinit { archive_read_free(handle) }

    /// Converts a libarchive return code (STYLE §3): warnings pass, anything worse throws with libarchive's
    /// own message.
    @discardableResult
    func check(_ code: Int32, _ operation: String) throws(TarError) -> Int32 {
        if code >= ARCHIVE_WARN { return code }
        let message = archive_error_string(handle).map { String(cString: $0) } ?? "error \(code)"
        throw TarError.archive(operation: operation, message: message, errno: archive_errno(handle))
    }

    /// True when the stream is not compressed, so the blob size bounds entry sizes directly.
    var isUncompressed: Bool {
        archive_filter_count(handle) <= 1 && archive_filter_code(handle, 0) == ARCHIVE_FILTER_NONE
    }

    /// Moves to the next header; nil at the end of the archive.
    func next() throws(TarError) -> Header? {
        var next: OpaquePointer?
        let code = archive_read_next_header(handle, &next)
        if code == ARCHIVE_EOF { return nil }
        try check(code, "read header")
        guard let next else { throw TarError.corrupt(path: nil, reason: "header without entry") }
        entry = next
        return Header(
            rawPath: Self.text(archive_entry_pathname(next), archive_entry_pathname_utf8(next)),
            fileType: UInt32(archive_entry_filetype(next)),
            permissions: UInt32(archive_entry_perm(next)),
            size: archive_entry_size_is_set(next) != 0 ? Int64(archive_entry_size(next)) : nil,
            mtime: Int64(archive_entry_mtime(next)),
            symlink: Self.text(archive_entry_symlink(next), archive_entry_symlink_utf8(next)),
            hardlink: Self.text(archive_entry_hardlink(next), archive_entry_hardlink_utf8(next)),
            position: Int64(archive_read_header_position(handle)))
    }

    /// The bytes of a name, when they are valid UTF-8. The raw form is preferred (the bytes as archived); the
    /// UTF-8 conversion is a fallback for archives in another declared charset. An invalid name yields "\u{FFFD}"
    /// markers via `String(decoding:)` so the caller can report and refuse it.
    private static func text(_ raw: UnsafePointer<CChar>?, _ utf8: UnsafePointer<CChar>?) -> String? {
        guard let pointer = raw ?? utf8 else { return nil }
        let bytes = UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)).bindMemory(to: UInt8.self)
        if let valid = String(validating: bytes, as: UTF8.self) { return valid }
        if raw != nil, let utf8 {
            let converted = UnsafeRawBufferPointer(start: utf8, count: strlen(utf8)).bindMemory(to: UInt8.self)
            if let valid = String(validating: converted, as: UTF8.self) { return valid }
        }
        return invalidMarker + String(decoding: bytes, as: UTF8.self)
    }

    /// Prefix marking a name that was not valid UTF-8 (NUL cannot occur: names are C strings).
    static let invalidMarker = "\u{0}invalid-utf8:"

    /// Reads the current entry's data into `buffer`; 0 at the end of the entry. Sparse holes read as zeros.
    func readData(into buffer: UnsafeMutableRawBufferPointer) throws(TarError) -> Int {
        let n = archive_read_data(handle, buffer.baseAddress, buffer.count)
        if n < 0 { try check(Int32(n), "read data") }
        return max(n, 0)
    }
}

/// Where a streamed archive's bytes come from. `next` blocks until bytes arrive and returns nil at the end of the
/// stream; the bytes it returns stay valid until the next call.
protocol ArchiveSource: AnyObject {
    func next() throws -> UnsafeRawBufferPointer?
}

/// libarchive's read callback for `ArchiveReader(source:)`: the next bytes, 0 at the end, -1 (with the source's
/// error as libarchive's message) on failure.
private func archiveSourceRead(
    _ archive: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ buffer: UnsafeMutablePointer<UnsafeRawPointer?>?
) -> la_ssize_t {
    guard let context else { return -1 }
    let source = Unmanaged<AnyObject>.fromOpaque(context).takeUnretainedValue() as! ArchiveSource
    do {
        guard let bytes = try source.next() else { return 0 }
        buffer?.pointee = bytes.baseAddress
        return la_ssize_t(bytes.count)
    } catch {
        mcvfs_archive_set_error(archive, "\(error)")
        return -1
    }
}
