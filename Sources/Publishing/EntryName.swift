/// The names a publish takes from an upper: a `<KEY>/` directory, or a file a group file names. Users write both
/// (a group file is any JSON a pod wrote), and a name reaches C calls, tar headers and other nodes' trees, so it is
/// checked alone, before anything is opened: a NUL would cut it short at the C call (two names becoming one file),
/// a `/` or `..` would leave the entry's directory, and control characters garble logs and terminals.
public enum EntryName {
    /// The longest name a Linux filesystem holds (`NAME_MAX`), in bytes.
    public static let maximumBytes = 255

    /// Why `name` is not one a publish takes; nil when it is.
    public static func problem(_ name: String) -> String? {
        if name.isEmpty { return "an empty name" }
        if name == "." || name == ".." { return "'\(name)' is not a file name" }
        if name.utf8.count > maximumBytes { return "a name longer than \(maximumBytes) bytes" }
        for scalar in name.unicodeScalars {
            switch scalar.value {
            case 0: return "a name with a NUL byte (\(printable(name)))"
            case 0x2F: return "a name with '/' (\(printable(name)))"
            case 0x01...0x1F, 0x7F...0x9F: return "a name with a control character (\(printable(name)))"
            case 0xFFFD: return "a name that is not UTF-8 (\(printable(name)))"
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
