import Foundation
import Glibc

/// Unmounting with fusermount3 (`mcvfs unmount`); what a new mount does with what is at its mountpoint is
/// `MountPlacement`.
public enum Mountpoint {
    public struct Problem: Error, CustomStringConvertible {
        public let description: String
    }

    /// `fusermount3 -u [-z] path`.
    public static func unmount(_ path: String, lazy: Bool) throws {
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
