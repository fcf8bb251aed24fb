import Foundation

/// Reads an eStargz TOC (`stargz.index.json`) straight from its bytes into `EStargz.TOC`.
///
/// A mount reads the TOC of every large image on its path to the first kernel, and a 2,000-kernel TOC is ~7 MB
/// of JSON: Foundation's decoder spends ~0.1 s building a generic tree first, this reader a fraction of that.
/// It is a strict JSON parser (RFC 8259: one value, no trailing bytes, escapes and surrogate pairs checked,
/// nesting bounded) that keeps only the fields `EStargz.Entry` has and skips any other member, as a `Codable`
/// decode does. Integer fields must be integers; a field of the wrong type is an error, not a default.
struct TOCReader {
    struct Failure: Error, CustomStringConvertible {
        var offset: Int
        var reason: String
        var description: String { "\(reason) at byte \(offset)" }
    }

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private static let maxDepth = 64

    static func read(_ data: Data) throws(Failure) -> EStargz.TOC {
        do {
            return try data.withUnsafeBytes { raw in
                var reader = TOCReader(bytes: raw)
                let toc = try reader.document()
                reader.skipWhitespace()
                guard reader.position == raw.count else { throw reader.failure("bytes after the document") }
                return toc
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(offset: 0, reason: "\(error)")
        }
    }

    private init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    // MARK: The TOC's shape

    private mutating func document() throws -> EStargz.TOC {
        var version: Int?
        var entries: [EStargz.Entry]?
        try object { reader, key in
            switch key {
            case "version": version = Int(try reader.integer())
            case "entries":
                var list: [EStargz.Entry] = []
                try reader.array { reader in list.append(try reader.entry()) }
                entries = list
            default: try reader.skipValue(depth: 1)
            }
        }
        guard let version else { throw failure("no 'version'") }
        guard let entries else { throw failure("no 'entries'") }
        return EStargz.TOC(version: version, entries: entries)
    }

    private mutating func entry() throws -> EStargz.Entry {
        var name: String?
        var type: String?
        var entry = EStargz.Entry(name: "", type: "")
        try object { reader, key in
            switch key {
            case "name": name = try reader.string()
            case "type": type = try reader.string()
            case "size": entry.size = try reader.optionalInteger()
            case "modtime": entry.modtime = try reader.optionalString()
            case "linkName": entry.linkName = try reader.optionalString()
            case "mode": entry.mode = try reader.optionalInteger()
            case "uid": entry.uid = try reader.optionalInteger().map { Int($0) }
            case "gid": entry.gid = try reader.optionalInteger().map { Int($0) }
            case "offset": entry.offset = try reader.optionalInteger()
            case "chunkOffset": entry.chunkOffset = try reader.optionalInteger()
            case "chunkSize": entry.chunkSize = try reader.optionalInteger()
            case "chunkDigest": entry.chunkDigest = try reader.optionalString()
            case "digest": entry.digest = try reader.optionalString()
            default: try reader.skipValue(depth: 2)
            }
        }
        guard let name else { throw failure("entry without 'name'") }
        guard let type else { throw failure("entry without 'type'") }
        entry.name = name
        entry.type = type
        return entry
    }

    // MARK: JSON

    private mutating func object(_ member: (inout TOCReader, String) throws -> Void) throws {
        try elements(open: "{", close: "}") { reader in
            let key = try reader.string()
            reader.skipWhitespace()
            try reader.expect(UInt8(ascii: ":"))
            reader.skipWhitespace()
            try member(&reader, key)
        }
    }

    private mutating func array(_ element: (inout TOCReader) throws -> Void) throws {
        try elements(open: "[", close: "]", element)
    }

    /// `open`, comma-separated elements read by `element`, `close`.
    private mutating func elements(
        open: Unicode.Scalar, close: Unicode.Scalar, _ element: (inout TOCReader) throws -> Void
    ) throws {
        try expect(UInt8(ascii: open))
        skipWhitespace()
        if peek() == UInt8(ascii: close) {
            position += 1
            return
        }
        while true {
            skipWhitespace()
            try element(&self)
            skipWhitespace()
            switch next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: close): return
            default: throw failure("expected ',' or '\(close)'")
            }
        }
    }

    private mutating func optionalInteger() throws -> Int64? {
        try null() ? nil : try integer()
    }

    private mutating func optionalString() throws -> String? {
        try null() ? nil : try string()
    }

    /// Consumes a `null` when one is next.
    private mutating func null() throws -> Bool {
        guard peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    private mutating func integer() throws -> Int64 {
        let start = position
        let negative = peek() == UInt8(ascii: "-")
        if negative { position += 1 }
        guard let first = peek(), first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else {
            throw failure("expected an integer")
        }
        var value: Int64 = 0
        while let digit = peek(), digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") {
            if position > start + (negative ? 1 : 0), value == 0 { throw failure("leading zero") }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(digit - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { throw failure("integer out of range") }
            value = sum
            position += 1
        }
        if let next = peek(), next == UInt8(ascii: ".") || next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
            throw failure("expected an integer, found a fraction or exponent")
        }
        return negative ? -value : value
    }

    private mutating func string() throws -> String {
        try expect(UInt8(ascii: "\""))
        let start = position
        // The common case, no escapes: one UTF-8 validation of the run of bytes.
        while let byte = peek(), byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
            guard byte >= 0x20 else { throw failure("control character in a string") }
            position += 1
        }
        if peek() == UInt8(ascii: "\"") {
            position += 1
            guard let text = String(validating: bytes[start..<(position - 1)], as: UTF8.self) else {
                throw failure("string is not UTF-8")
            }
            return text
        }
        var scalars = Array(bytes[start..<position])
        while true {
            guard let byte = next() else { throw failure("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                guard let text = String(validating: scalars, as: UTF8.self) else {
                    throw failure("string is not UTF-8")
                }
                return text
            case UInt8(ascii: "\\"):
                try escape(into: &scalars)
            default:
                guard byte >= 0x20 else { throw failure("control character in a string") }
                scalars.append(byte)
            }
        }
    }

    private mutating func escape(into out: inout [UInt8]) throws {
        guard let kind = next() else { throw failure("unterminated escape") }
        switch kind {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(kind)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0c)
        case UInt8(ascii: "n"): out.append(0x0a)
        case UInt8(ascii: "r"): out.append(0x0d)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            var code = UInt32(try hex4())
            if (0xD800..<0xDC00).contains(code) {
                guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u") else {
                    throw failure("unpaired surrogate")
                }
                let low = UInt32(try hex4())
                guard (0xDC00..<0xE000).contains(low) else { throw failure("unpaired surrogate") }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(code) {
                throw failure("unpaired surrogate")
            }
            guard let scalar = Unicode.Scalar(code) else { throw failure("invalid escape") }
            out.append(contentsOf: Array(String(Character(scalar)).utf8))
        default: throw failure("invalid escape")
        }
    }

    private mutating func hex4() throws -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            guard let byte = next() else { throw failure("short \\u escape") }
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("bad \\u escape")
            }
            value = value << 4 | UInt16(digit)
        }
        return value
    }

    /// Skips any JSON value (a member the TOC model does not have), checking it is well formed.
    private mutating func skipValue(depth: Int) throws {
        guard depth < Self.maxDepth else { throw failure("nesting too deep") }
        switch peek() {
        case UInt8(ascii: "{"): try object { reader, _ in try reader.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["): try array { reader in try reader.skipValue(depth: depth + 1) }
        case UInt8(ascii: "\""): _ = try string()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: try number()
        }
    }

    /// Any JSON number (fractions and exponents included), skipped.
    private mutating func number() throws {
        if peek() == UInt8(ascii: "-") { position += 1 }
        guard digits() > 0 else { throw failure("expected a value") }
        if peek() == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { throw failure("bad number") }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            position += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
            guard digits() > 0 else { throw failure("bad number") }
        }
    }

    private mutating func digits() -> Int {
        let start = position
        while let byte = peek(), byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") { position += 1 }
        return position - start
    }

    private mutating func literal(_ word: StaticString) throws {
        let expected = UnsafeRawBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard position + expected.count <= bytes.count,
            bytes[position..<(position + expected.count)].elementsEqual(expected)
        else { throw failure("expected \(word)") }
        position += expected.count
    }

    private mutating func skipWhitespace() {
        while let byte = peek(),
            byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r")
                || byte == UInt8(ascii: "\t")
        {
            position += 1
        }
    }

    private mutating func expect(_ byte: UInt8) throws {
        guard next() == byte else { throw failure("expected '\(Character(Unicode.Scalar(byte)))'") }
    }

    private func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func next() -> UInt8? {
        defer { position += 1 }
        return peek()
    }

    private func failure(_ reason: String) -> Failure { Failure(offset: position, reason: reason) }
}
