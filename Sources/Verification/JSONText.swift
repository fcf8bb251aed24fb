/// JSON text writers that must match another implementation byte for byte.
enum JSONText {
    /// A string literal exactly as Go's `encoding/json` (Go ≥ 1.22) writes it: HTML-safe (`<`, `>`, `&` escaped),
    /// `\b \f \n \r \t` short escapes, other control characters and U+2028/U+2029 as lowercase `\u00xx`.
    static func goString(_ value: String) -> String {
        quoted(value) { ["<", ">", "&", "\u{2028}", "\u{2029}"].contains($0) }
    }

    /// A string literal as RFC 8785 (JSON Canonicalization Scheme) writes it: only `"`, `\` and control
    /// characters are escaped, with the short forms where JSON has them.
    static func canonicalString(_ value: String) -> String {
        quoted(value) { _ in false }
    }

    /// The escaping both forms share; `alsoEscape` names the extra characters written as `\u` escapes.
    private static func quoted(_ value: String, alsoEscape: (Unicode.Scalar) -> Bool) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || alsoEscape(scalar) {
                    out += unicodeEscape(scalar)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    private static func unicodeEscape(_ scalar: Unicode.Scalar) -> String {
        let hex = String(scalar.value, radix: 16)
        return "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }
}
