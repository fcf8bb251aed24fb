/// A content digest, `sha256:<64 lowercase hex>`. Other algorithms are refused: mcvfs verifies every byte
/// it serves and only knows how to verify sha256.
public struct Digest: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    public let hex: String

    public enum ValidationError: Error, Equatable, CustomStringConvertible {
        case unsupportedAlgorithm(String)
        case malformed(String)

        public var description: String {
            switch self {
            case .unsupportedAlgorithm(let a): return "unsupported digest algorithm '\(a)' (only sha256 is accepted)"
            case .malformed(let d): return "malformed digest '\(d)': expected sha256:<64 lowercase hex digits>"
            }
        }
    }

    public init(parsing text: String) throws {
        guard let colon = text.firstIndex(of: ":") else { throw ValidationError.malformed(text) }
        let algorithm = text[..<colon]
        guard algorithm == "sha256" else { throw ValidationError.unsupportedAlgorithm(String(algorithm)) }
        try self.init(hex: String(text[text.index(after: colon)...]))
    }

    public init(hex: String) throws {
        guard hex.utf8.count == 64,
            hex.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
        else { throw ValidationError.malformed("sha256:" + hex) }
        self.hex = hex
    }

    public var description: String { "sha256:" + hex }

    /// Short form for logs and tables (`sha256:0123456789ab`).
    public var short: String { "sha256:" + hex.prefix(12) }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.hex < rhs.hex }
}

extension ImageReference {
    public typealias Digest = OCI.Digest
}
