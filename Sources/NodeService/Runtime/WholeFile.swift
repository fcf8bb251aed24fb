import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A file read until EOF, never by the size a `stat` reported: procfs reports 0 and hands out a page per read,
/// and a mount's control files are rendered anew on each open, so a size taken earlier can be shorter than what
/// the open gives (Foundation's whole-file reads stopped at it, cutting `/proc/self/mountinfo` after 4 KiB and a
/// status document mid-JSON).
public enum WholeFile {
    /// The open or read that failed, with its `errno`.
    public struct Failure: Error, Equatable {
        public let errno: Int32
    }

    /// The bytes of `path`, or why they could not be read.
    public static func read(_ path: String) -> Result<Data, Failure> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(Failure(errno: errno)) }
        defer { close(fd) }
        var bytes = Data()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(Failure(errno: errno))
            }
            if n == 0 { return .success(bytes) }
            bytes.append(contentsOf: chunk[..<n])
        }
    }
}
