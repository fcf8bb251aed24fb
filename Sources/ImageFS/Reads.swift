import Foundation
import Glibc

/// How an open file's bytes are read, from memory or from a descriptor: shared by the image tree, the overlay and
/// the FUSE bridge (which replies from memory without a copy).
public enum Reads {
    /// Copies the part of `data` at `offset` that fits into `buffer`.
    static func copy(_ data: Data, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        data.withUnsafeBytes { copy($0, offset: offset, into: buffer) }
    }

    /// Copies the part of `bytes` at `offset` that fits into `buffer`.
    static func copy(_ bytes: UnsafeRawBufferPointer, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) -> Int
    {
        let part = slice(bytes, offset: offset, count: buffer.count)
        buffer.copyMemory(from: part)
        return part.count
    }

    /// The part of `bytes` a read of `count` at `offset` returns (empty past the end).
    public static func slice(_ bytes: UnsafeRawBufferPointer, offset: Int64, count: Int) -> UnsafeRawBufferPointer {
        guard offset < bytes.count else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        let start = Int(offset)
        return UnsafeRawBufferPointer(rebasing: bytes[start..<(start + min(count, bytes.count - start))])
    }

    /// `pread` until `buffer` is full or the file ends (a short count only at end of file).
    static func fill(_ buffer: UnsafeMutableRawBufferPointer, from fd: Int32, offset: Int64) throws(FSError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw .unavailable(reason: "read: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
