/// A content digest, `sha256:<64 lowercase hex>`. Other algorithms are refused: mcvfs verifies every byte
/// it serves and only knows how to verify sha256.
public struct Digest: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    /// The 32 bytes as four big-endian words: a mount keys tables of tens of thousands of file contents by digest,
    /// and hashing and comparing four words costs a fraction of doing so on 64 hex characters.
    private let words: (UInt64, UInt64, UInt64, UInt64)

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
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var count = 0
        for byte in hex.utf8 {
            let nibble: UInt8
            switch byte {
            case 48...57: nibble = byte - 48
            case 97...102: nibble = byte - 87
            default: throw ValidationError.malformed("sha256:" + hex)
            }
            guard count < 64 else { throw ValidationError.malformed("sha256:" + hex) }
            Self.shift(&words, in: UInt64(nibble), bits: 4, word: count / 16)
            count += 1
        }
        guard count == 64 else { throw ValidationError.malformed("sha256:" + hex) }
        self.words = words
    }

    /// The digest whose 32 bytes these are.
    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 32, "a sha256 digest is 32 bytes")
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        for (i, byte) in bytes.enumerated() {
            Self.shift(&words, in: UInt64(byte), bits: 8, word: i / 8)
        }
        self.words = words
    }

    private static func shift(
        _ words: inout (UInt64, UInt64, UInt64, UInt64), in value: UInt64, bits: UInt64, word: Int
    ) {
        switch word {
        case 0: words.0 = words.0 << bits | value
        case 1: words.1 = words.1 << bits | value
        case 2: words.2 = words.2 << bits | value
        default: words.3 = words.3 << bits | value
        }
    }

    /// 64 lowercase hex digits.
    public var hex: String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: 64) { out in
            for (w, word) in [words.0, words.1, words.2, words.3].enumerated() {
                for i in 0..<16 {
                    out[w * 16 + i] = digits[Int((word >> UInt64(60 - 4 * i)) & 0xf)]
                }
            }
            return 64
        }
    }

    public static func == (lhs: Digest, rhs: Digest) -> Bool {
        lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2
            && lhs.words.3 == rhs.words.3
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
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

    public static func < (lhs: Digest, rhs: Digest) -> Bool {
        (lhs.words.0, lhs.words.1, lhs.words.2, lhs.words.3) < (rhs.words.0, rhs.words.1, rhs.words.2, rhs.words.3)
    }
}

extension ImageReference {
    public typealias Digest = OCI.Digest
}
