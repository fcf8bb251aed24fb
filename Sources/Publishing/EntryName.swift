/// The names a publish takes from an upper: a `<KEY>/` directory, or a file a group file names. Users write both
/// (a group file is any JSON a pod wrote), and a name reaches C calls, tar headers and other nodes' trees, so it is
/// checked alone, before anything is opened: a NUL would cut it short at the C call (two names becoming one file),
/// a `/` or `..` would leave the entry's directory, and control characters garble logs and terminals.
public enum EntryName {
    /// The longest name a Linux filesystem holds (`NAME_MAX`), in bytes.
    public static let maximumBytes = 255

    /// Why a name is not one a publish takes; `description` is how a report names it. The cases that carry the
    /// name render it `printable`.
    public enum Problem: Sendable, Equatable, CustomStringConvertible {
        case empty
        /// `.` or `..`.
        case dotName(String)
        /// Longer than `maximumBytes` bytes.
        case tooLong
        case nul(String)
        case slash(String)
        /// A C0 or C1 control character, or DEL.
        case controlCharacter(String)
        /// A name read from a directory that is not UTF-8 (it reads with U+FFFD in it).
        case notUTF8(String)

        public var description: String {
            switch self {
            case .empty: return "an empty name"
            case .dotName(let name): return "'\(name)' is not a file name"
            case .tooLong: return "a name longer than \(EntryName.maximumBytes) bytes"
            case .nul(let name): return "a name with a NUL byte (\(EntryName.printable(name)))"
            case .slash(let name): return "a name with '/' (\(EntryName.printable(name)))"
            case .controlCharacter(let name): return "a name with a control character (\(EntryName.printable(name)))"
            case .notUTF8(let name): return "a name that is not UTF-8 (\(EntryName.printable(name)))"
            }
        }
    }

    /// Why `name` is not one a publish takes; nil when it is.
    public static func problem(_ name: String) -> Problem? {
        if name.isEmpty { return .empty }
        if name == "." || name == ".." { return .dotName(name) }
        if name.utf8.count > maximumBytes { return .tooLong }
        for scalar in name.unicodeScalars {
            switch scalar.value {
            case 0: return .nul(name)
            case 0x2F: return .slash(name)
            case 0x01...0x1F, 0x7F...0x9F: return .controlCharacter(name)
            case 0xFFFD: return .notUTF8(name)
            default: continue
            }
        }
        return nil
    }

    /// `name` with every control character and NUL escaped (`\u{0}`), for a log line or a report.
    public static func printable(_ name: String) -> String {
        var out = ""
        for scalar in name.unicodeScalars {
            switch scalar.value {
            case 0x00...0x1F, 0x7F...0x9F: out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
