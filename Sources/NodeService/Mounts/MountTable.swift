import Foundation

/// The mounts `/proc/self/mountinfo` lists (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] -
/// FSTYPE SOURCE SUPEROPTS`. mcvfs mounts have fstype `fuse.mcvfs` (libfuse's `subtype=mcvfs`).
public struct MountTable: Sendable {
    public struct Entry: Sendable, Equatable {
        public var mountpoint: String
        public var fsType: String
        public var source: String
        /// `MAJOR:MINOR` of the mount's device (for FUSE, also the name of its backing device in sysfs).
        public var device: String = ""
        /// The mount's ID and its parent's: of mounts stacked on one mountpoint, the top one is the child.
        public var id: Int = 0
        public var parent: Int = 0
    }

    public var entries: [Entry]

    public init(mountinfo: String) {
        entries = mountinfo.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard fields.count > 6, let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 2 < fields.count else {
                return nil
            }
            return Entry(
                mountpoint: Self.unescape(fields[4]), fsType: fields[dash + 1], source: Self.unescape(fields[dash + 2]),
                device: fields[2], id: Int(fields[0]) ?? 0, parent: Int(fields[1]) ?? 0)
        }
    }

    public static func current() -> MountTable {
        MountTable(
            mountinfo: String(decoding: (try? WholeFile.read("/proc/self/mountinfo").get()) ?? Data(), as: UTF8.self))
    }

    public static let mcvfsType = "fuse.mcvfs"

    public var mcvfsMounts: [Entry] { entries.filter { $0.fsType == Self.mcvfsType } }

    /// mountinfo escapes space, tab, newline and backslash as three octal digits.
    static func unescape(_ field: String) -> String {
        var bytes: [UInt8] = []
        let chars = Array(field.utf8)
        var i = 0
        while i < chars.count {
            if chars[i] == UInt8(ascii: "\\"), i + 4 <= chars.count,
                let code = UInt8(String(decoding: chars[(i + 1)..<(i + 4)], as: UTF8.self), radix: 8)
            {
                bytes.append(code)
                i += 4
            } else {
                bytes.append(chars[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
