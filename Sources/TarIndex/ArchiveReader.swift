import CArchive
import Foundation

/// Owns a libarchive read handle over one file; the only place `archive *` exists. Internal: no C type leaves
/// this module.
final class ArchiveReader {
    private let handle: OpaquePointer
    private var entry: OpaquePointer?
    let path: String

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
        guard let handle = archive_read_new() else {
            throw TarError.archive(operation: "archive_read_new", message: "out of memory", errno: ENOMEM)
        }
        self.handle = handle
        self.path = path
        try check(archive_read_support_filter_all(handle), "support_filter_all")
        try check(archive_read_support_format_tar(handle), "support_format_tar")
        try check(archive_read_support_format_gnutar(handle), "support_format_gnutar")
        try check(archive_read_support_format_empty(handle), "support_format_empty")
        try check(archive_read_open_filename(handle, path, 1 << 16), "open \(path)")
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
