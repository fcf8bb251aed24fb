/// One challenge from a `WWW-Authenticate` header (RFC 7235 §4.1): a scheme and its parameters.
///
/// Registries answer `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull"`
/// (distribution spec, token authentication) or `Basic realm="Registry Realm"`. One header may carry several
/// challenges separated by commas, and a response may carry several headers.
public struct AuthChallenge: Sendable, Hashable, CustomStringConvertible {
    /// The scheme, lowercased (`bearer`, `basic`).
    public var scheme: String
    /// Parameters with lowercased names; values unquoted and unescaped.
    public var parameters: [String: String]
    /// A `token68` value (`Negotiate abc==`), when the challenge carried one instead of parameters.
    public var token: String?

    public init(scheme: String, parameters: [String: String] = [:], token: String? = nil) {
        self.scheme = scheme.lowercased()
        self.parameters = parameters
        self.token = token
    }

    public var isBearer: Bool { scheme == "bearer" }
    public var isBasic: Bool { scheme == "basic" }
    public var realm: String? { parameters["realm"] }
    public var service: String? { parameters["service"] }
    public var scope: String? { parameters["scope"] }
    /// `error="invalid_token"` (RFC 6750 §3): the token we sent was rejected, typically because it expired.
    public var error: String? { parameters["error"] }

    public var description: String {
        let params = parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\"\($0.value)\"" }
        return ([scheme] + [token].compactMap { $0 } + [params.joined(separator: ",")]).filter { !$0.isEmpty }
            .joined(separator: " ")
    }

    /// Parses every challenge in one header value. Malformed tails are dropped rather than thrown:
    /// a registry's odd header should fail at the token request with evidence, not here.
    public static func parse(_ header: String) -> [AuthChallenge] {
        var scanner = Scanner(Array(header.utf8))
        var challenges: [AuthChallenge] = []
        while true {
            scanner.skip { $0 == .space || $0 == .tab || $0 == .comma }
            guard let scheme = scanner.token() else { break }
            var challenge = AuthChallenge(scheme: scheme)
            // After the scheme: nothing, a token68, or a comma-separated parameter list.
            scanner.skip { $0 == .space || $0 == .tab }
            var first = true
            while !scanner.atEnd {
                let mark = scanner.position
                scanner.skip { $0 == .space || $0 == .tab || (!first && $0 == .comma) }
                guard let name = scanner.token() else {
                    if first, let token68 = scanner.token68() { challenge.token = token68 }
                    break
                }
                scanner.skip { $0 == .space || $0 == .tab }
                guard scanner.consume(.equals) else {
                    // A bare token: the next challenge's scheme. Rewind so the outer loop reads it.
                    scanner.position = mark
                    break
                }
                if scanner.peek == .equals {
                    // `name==` is a token68 ending in padding, not a parameter.
                    scanner.position = mark
                    scanner.skip { $0 == .space || $0 == .tab }
                    if first, let token68 = scanner.token68() { challenge.token = token68 }
                    break
                }
                scanner.skip { $0 == .space || $0 == .tab }
                let value = scanner.peek == .quote ? scanner.quoted() : scanner.bareValue()
                challenge.parameters[name.lowercased()] = value
                first = false
                scanner.skip { $0 == .space || $0 == .tab }
                guard scanner.consume(.comma) else { break }
            }
            challenges.append(challenge)
        }
        return challenges
    }

    /// Parses several header values and returns the challenge a client should answer:
    /// Bearer when offered, else Basic, else the first.
    public static func preferred(in headers: [String]) -> AuthChallenge? {
        let all = headers.flatMap(parse)
        return all.first(where: \.isBearer) ?? all.first(where: \.isBasic) ?? all.first
    }
}

private struct Scanner {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { position >= bytes.count }
    var peek: UInt8? { atEnd ? nil : bytes[position] }

    mutating func skip(while predicate: (UInt8) -> Bool) {
        while let c = peek, predicate(c) { position += 1 }
    }

    mutating func consume(_ c: UInt8) -> Bool {
        guard peek == c else { return false }
        position += 1
        return true
    }

    /// RFC 7230 `token`: visible ASCII except separators.
    mutating func token() -> String? {
        let start = position
        skip { c in c > 0x20 && c < 0x7f && !Self.separators.contains(c) }
        return position > start ? String(decoding: bytes[start..<position], as: UTF8.self) : nil
    }

    /// An unquoted parameter value. RFC 7235 says `token`, but registries send bare URLs
    /// (`realm=https://...`), so read up to the next comma or whitespace.
    mutating func bareValue() -> String {
        let start = position
        skip { $0 != .comma && $0 != .space && $0 != .tab }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    /// RFC 7235 `token68`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
    mutating func token68() -> String? {
        let start = position
        skip { c in Self.isAlnum(c) || Array("-._~+/".utf8).contains(c) }
        skip { $0 == .equals }
        return position > start ? String(decoding: bytes[start..<position], as: UTF8.self) : nil
    }

    /// A quoted-string with backslash escapes; an unterminated one runs to the end.
    mutating func quoted() -> String {
        position += 1
        var out: [UInt8] = []
        while let c = peek {
            position += 1
            if c == .quote { break }
            if c == .backslash, let next = peek {
                out.append(next)
                position += 1
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let separators = Set("()<>@,;:\\\"/[]?={} \t".utf8)

    private static func isAlnum(_ c: UInt8) -> Bool {
        (0x30...0x39).contains(c) || (0x41...0x5a).contains(c) || (0x61...0x7a).contains(c)
    }
}

extension UInt8 {
    fileprivate static let space = UInt8(ascii: " ")
    fileprivate static let tab = UInt8(ascii: "\t")
    fileprivate static let comma = UInt8(ascii: ",")
    fileprivate static let equals = UInt8(ascii: "=")
    fileprivate static let quote = UInt8(ascii: "\"")
    fileprivate static let backslash = UInt8(ascii: "\\")
}
