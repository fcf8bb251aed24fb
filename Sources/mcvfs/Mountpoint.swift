import Foundation
import Glibc
import NodeService

/// Checks on the mountpoint directory: it exists, nothing live is mounted on it, and a dead daemon's mount
/// (the kernel answers ENOTCONN) is cleared.
enum Mountpoint {
    struct Problem: Error, CustomStringConvertible {
        let description: String
    }

    static func prepare(_ path: String) throws {
        var info = stat()
        // `statvfs` always reaches the daemon; `stat` may be answered from attributes the kernel cached.
        var filesystem = statvfs()
        if statvfs(path, &filesystem) != 0 && errno == ENOTCONN || stat(path, &info) != 0 {
            guard errno == ENOTCONN else {
                throw Problem(description: "mountpoint \(path): \(String(cString: strerror(errno)))")
            }
            Log.warning("clearing the stale mount of a dead mcvfs daemon at \(path)")
            try unmount(path, lazy: true)
            guard stat(path, &info) == 0 else {
                throw Problem(description: "mountpoint \(path) is still stale after unmounting")
            }
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw Problem(description: "mountpoint \(path) is not a directory")
        }
        if isMounted(path) {
            throw Problem(description: "\(path) is already a mount point; run `mcvfs unmount \(path)` first")
        }
    }

    /// True when `/proc/self/mountinfo` lists `path` as a mount point.
    static func isMounted(_ path: String) -> Bool {
        MountTable.current().entries.contains { $0.mountpoint == path }
    }

    static func unmount(_ path: String, lazy: Bool) throws {
        var arguments = ["-u"]
        if lazy { arguments.append("-z") }
        let tool = Process()
        tool.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tool.arguments = ["fusermount3"] + arguments + [path]
        let errors = Pipe()
        tool.standardError = errors
        try tool.run()
        tool.waitUntilExit()
        guard tool.terminationStatus == 0 else {
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw Problem(
                description: "cannot unmount \(path): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
