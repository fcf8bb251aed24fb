import Foundation

/// A decoded JSON value, for the free-form parts of signed documents (a payload's `optional` map).
public enum JSONValue: Sendable, Hashable, Codable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let v): try container.encode(v)
        case .number(let v): try container.encode(v)
        case .string(let v): try container.encode(v)
        case .array(let v): try container.encode(v)
        case .object(let v): try container.encode(v)
        }
    }

    /// The string, when this is one.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var description: String {
        switch self {
        case .null: return "null"
        case .bool(let v): return String(v)
        case .number(let v): return v.rounded() == v && abs(v) < 1e15 ? String(Int64(v)) : String(v)
        case .string(let v): return v
        case .array(let v): return "[" + v.map(\.description).joined(separator: ",") + "]"
        case .object(let v):
            return "{" + v.keys.sorted().map { "\($0):\(v[$0]!.description)" }.joined(separator: ",") + "}"
        }
    }
}

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
