import Foundation

/// The kernel's read-ahead window for a mount. FUSE mounts start at 128 KiB, so a sequential read of a large
/// kernel reaches the daemon as 128 KiB requests, each a round trip through userspace; a larger window lets the
/// kernel ask for up to the 1 MiB a request can carry. Set through the mount's backing device in sysfs (root).
public enum ReadAhead {
    public enum Failure: Error, CustomStringConvertible {
        case notMounted(String)
        case write(path: String, errno: Int32)

        public var description: String {
            switch self {
            case .notMounted(let path): return "\(path) is not in /proc/self/mountinfo"
            case .write(let path, let code): return "cannot write \(path): \(String(cString: strerror(code)))"
            }
        }
    }

    /// Sets the read-ahead of the mount at `mountpoint` to `kibibytes`.
    public static func set(kibibytes: Int, mountpoint: String, table: MountTable = .current()) throws(Failure) {
        guard let entry = table.entries.last(where: { $0.mountpoint == mountpoint }) else {
            throw .notMounted(mountpoint)
        }
        let path = "/sys/class/bdi/\(entry.device)/read_ahead_kb"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .write(path: path, errno: errno) }
        defer { close(fd) }
        let text = Array("\(kibibytes)\n".utf8)
        guard write(fd, text, text.count) == text.count else { throw .write(path: path, errno: errno) }
    }
}
