import Foundation
import Glibc

/// The two ways an open file is read, shared by the image tree and the overlay.
enum Reads {
    /// Copies the part of `data` at `offset` that fits into `buffer`.
    static func copy(_ data: Data, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard offset < data.count else { return 0 }
        let count = min(buffer.count, data.count - Int(offset))
        data.withUnsafeBytes { bytes in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[Int(offset)..<Int(offset) + count]))
        }
        return count
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
