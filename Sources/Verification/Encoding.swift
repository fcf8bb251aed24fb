import Foundation

/// Decodes standard base64 as Go's `base64.StdEncoding` does: line breaks are skipped, anything else must be valid
/// padded base64 (cosign's BYO-PKI signatures are wrapped at 76 columns).
func decodeBase64(_ text: String, what: String) throws(VerificationError) -> Data {
    let compact = text.filter { $0 != "\n" && $0 != "\r" }
    guard let data = Data(base64Encoded: compact) else {
        throw .malformed(what: what, reason: "not valid base64")
    }
    return data
}

extension Data {
    /// Lowercase hex, two digits per byte.
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count * 2)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses hex (either case); nil for odd lengths or other characters.
    init?(hex: String) {
        let utf8 = Array(hex.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self.init(bytes)
    }
}

/// One `-----BEGIN <label>-----` block of a PEM text.
struct PEMBlock: Equatable {
    let label: String
    let der: Data

    /// Every block in `text`, in order; text between blocks is ignored (as Go's `pem.Decode` loop does).
    static func parse(_ text: String, what: String) throws(VerificationError) -> [PEMBlock] {
        var blocks: [PEMBlock] = []
        var label: String?
        var body = ""
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if let current = label {
                if line == "-----END \(current)-----" {
                    blocks.append(PEMBlock(label: current, der: try decodeBase64(body, what: what)))
                    label = nil
                    body = ""
                } else if line.hasPrefix("-----") {
                    throw .malformed(what: what, reason: "PEM block '\(current)' is not terminated")
                } else if !line.contains(":") {  // skip RFC 1421 headers (Proc-Type, DEK-Info)
                    body += line
                }
            } else if line.hasPrefix("-----BEGIN "), line.hasSuffix("-----") {
                label = String(line.dropFirst(11).dropLast(5))
            }
        }
        if let label { throw .malformed(what: what, reason: "PEM block '\(label)' is not terminated") }
        return blocks
    }
}
