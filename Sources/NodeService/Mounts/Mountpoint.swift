import Foundation
import Glibc

/// Unmounting with fusermount3 (`mcvfs unmount`); what a new mount does with what is at its mountpoint is
/// `MountPlacement`.
public enum Mountpoint {
    /// Why `unmount` refused or failed (the path named in each case).
    public enum Problem: Error, Equatable, CustomStringConvertible {
        /// Nothing is mounted at the path.
        case notMounted(String)
        /// Another filesystem is mounted there, which `mcvfs unmount` never touches.
        case notMcvfs(String, fsType: String)
        /// `fusermount3` failed, saying `message`; `busy`: files under the mount are open and the unmount was not
        /// lazy.
        case failed(String, message: String, busy: Bool)

        public var description: String {
            switch self {
            case .notMounted(let path):
                return "\(path) is not an mcvfs mount (nothing is mounted there); `mcvfs status` lists them"
            case .notMcvfs(let path, let fsType):
                return "\(path) is not an mcvfs mount (it is \(fsType)); use umount(8) for it"
            case .failed(let path, let message, let busy):
                return "cannot unmount \(path): \(message)"
                    + (busy ? "; files under it are open: close them, or try --lazy" : "")
            }
        }
    }

    /// `fusermount3 -u [-z] path`, for an mcvfs mount only (live or stale): anything else at `path` is refused,
    /// so a mistyped path never unmounts another filesystem.
    public static func unmount(_ given: String, lazy: Bool) throws {
        // mountinfo names mountpoints by their real path: resolve the parent's symlinks (not the mountpoint
        // itself, which a dead daemon's mount cannot answer for).
        let parent = (given as NSString).deletingLastPathComponent
        let path =
            given == "/"
            ? given
            : realpath(parent, nil).map { resolved in
                defer { free(resolved) }
                return (String(cString: resolved) as NSString).appendingPathComponent(
                    (given as NSString).lastPathComponent)
            } ?? given
        guard let top = MountPlacement.topEntry(at: path) else { throw Problem.notMounted(path) }
        guard top.entry.fsType == MountTable.mcvfsType else {
            throw Problem.notMcvfs(path, fsType: top.entry.fsType)
        }
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
                .trimmingCharacters(in: .whitespacesAndNewlines)
            throw Problem.failed(path, message: message, busy: message.contains("busy") && !lazy)
        }
    }
}
