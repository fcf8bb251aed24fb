import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A file mapped whole, read-only and shared with the page cache: reads are served from the page cache's own
/// pages, and any number of threads may read it. Unmapped when the last reference goes, so a region handed out
/// stays valid for as long as its holder keeps the mapping.
///
/// The mapping outlives the file's name: a file renamed or unlinked after mapping keeps its pages.
public final class MappedFile: @unchecked Sendable {
    // Immutable after init: the pages are mapped PROT_READ and never remapped.
    public let bytes: UnsafeRawBufferPointer
    public let path: String

    /// Maps the file open at `fd` (which may be closed afterwards); an empty file maps to no bytes.
    /// - Throws: `CacheError.io` when `fstat` or `mmap` fails.
    public init(descriptor fd: Int32, path: String) throws(CacheError) {
        var info = stat()
        try check(fstat(fd, &info), "fstat", path)
        self.path = path
        guard info.st_size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let base = mmap(nil, Int(info.st_size), PROT_READ, MAP_SHARED, fd, 0)
        guard let base, base != MAP_FAILED else { throw CacheError.io(operation: "mmap", path: path, errno: errno) }
        bytes = UnsafeRawBufferPointer(start: base, count: Int(info.st_size))
    }

    /// Maps the file at `path`.
    public convenience init(path: String) throws(CacheError) {
        let fd = try check(open(path, O_RDONLY | O_CLOEXEC), "open", path)
        defer { close(fd) }
        try self.init(descriptor: fd, path: path)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    /// `length` bytes at `offset`, or nil when that runs past the end of the file.
    public func region(offset: Int64, length: Int64) -> UnsafeRawBufferPointer? {
        guard offset >= 0, length >= 0, offset + length <= Int64(bytes.count) else { return nil }
        guard length > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(rebasing: bytes[Int(offset)..<Int(offset + length)])
    }
}
