import Foundation
import OCI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An open committed blob, read with `pread` so any number of threads may share one handle.
/// The descriptor is closed when the handle is released.
public final class BlobHandle: Sendable {
    public let digest: Digest
    public let size: Int64
    public let path: String
    private let fd: Int32

    init(digest: Digest, path: String) throws(CacheError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { throw CacheError.notFound(digest) }
            throw CacheError.io(operation: "open", path: path, errno: errno)
        }
        var info = stat()
        if fstat(fd, &info) != 0 {
            let code = errno
            close(fd)
            throw CacheError.io(operation: "fstat", path: path, errno: code)
        }
        self.digest = digest
        self.path = path
        self.fd = fd
        self.size = Int64(info.st_size)
    }

    deinit { close(fd) }

    /// Reads up to `count` bytes at `offset`; fewer only at the end of the blob.
    public func read(offset: Int64, count: Int) throws(CacheError) -> Data {
        guard offset < size, count > 0 else { return Data() }
        let wanted = Int(min(Int64(count), size - offset))
        var data = Data(count: wanted)
        let filled: Int
        do {
            filled = try data.withUnsafeMutableBytes { try read(into: $0, offset: offset) }
        } catch {
            throw error as! CacheError  // read(into:) throws nothing else; withUnsafeMutableBytes erases the type
        }
        if filled < wanted { data.removeSubrange(filled..<data.count) }
        return data
    }

    /// Reads into `buffer` at `offset`, returning the byte count (for FUSE replies without a copy).
    public func read(into buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(CacheError) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        var filled = 0
        while filled < buffer.count {
            let n = pread(fd, base + filled, buffer.count - filled, off_t(offset) + off_t(filled))
            if n < 0 {
                if errno == EINTR { continue }
                throw CacheError.io(operation: "pread", path: path, errno: errno)
            }
            if n == 0 { break }
            filled += n
        }
        return filled
    }
}
