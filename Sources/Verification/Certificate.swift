import COpenSSL
import Foundation

/// An X.509 certificate, held as DER with the fields signature verification needs decoded once.
public struct Certificate: Sendable, Hashable, CustomStringConvertible {
    /// A subject alternative name of the kinds cosign matches identities against.
    public enum AlternativeName: Sendable, Hashable, CustomStringConvertible {
        case email(String)
        case uri(String)
        case dns(String)

        public var value: String {
            switch self {
            case .email(let v), .uri(let v), .dns(let v): return v
            }
        }

        public var description: String {
            switch self {
            case .email(let v): return "email:\(v)"
            case .uri(let v): return "URI:\(v)"
            case .dns(let v): return "DNS:\(v)"
            }
        }
    }

    public static let codeSigningOID = "1.3.6.1.5.5.7.3.3"
    /// `timeStamping`, the only extended key usage a TSA certificate may have.
    public static let timeStampingOID = "1.3.6.1.5.5.7.3.8"
    public static let anyExtendedKeyUsageOID = "2.5.29.37.0"
    /// Fulcio's OIDC issuer extension, a DER UTF8String (Fulcio ≥ 1.3):
    /// https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
    public static let issuerV2OID = "1.3.6.1.4.1.57264.1.8"
    /// Fulcio's deprecated OIDC issuer extension: the issuer URL as raw bytes, no DER wrapping.
    public static let issuerV1OID = "1.3.6.1.4.1.57264.1.1"

    public let der: Data
    public let subject: String
    public let issuer: String
    public let notBefore: Date
    public let notAfter: Date
    public let publicKey: PublicKey
    public let alternativeNames: [AlternativeName]
    /// Dotted OIDs of the extended key usage extension; `nil` when the certificate has none.
    public let extendedKeyUsages: [String]?
    /// The OIDC issuer Fulcio recorded (extension .1.8, else legacy .1.1); `nil` for other certificates.
    public let oidcIssuer: String?
    /// Basic constraints say CA.
    public let isCA: Bool
    /// A CA whose subject is its issuer and whose signature its own key verifies: a root.
    public let isSelfSignedCA: Bool
    /// The extended key usage extension is marked critical (RFC 3161 §2.3 requires it of a TSA certificate).
    public let hasCriticalExtendedKeyUsage: Bool

    /// Parses one DER certificate.
    public init(der: Data) throws(VerificationError) {
        let handle = try X509Handle(der: der)
        self.der = der
        subject = Self.name(X509_get_subject_name(handle.pointer))
        issuer = Self.name(X509_get_issuer_name(handle.pointer))
        notBefore = try asn1Date(X509_get0_notBefore(handle.pointer))
        notAfter = try asn1Date(X509_get0_notAfter(handle.pointer))
        publicKey = try PublicKey(handle: PKeyHandle(certificate: handle))
        alternativeNames = try Self.alternativeNames(handle)
        extendedKeyUsages = try Self.extendedKeyUsages(handle)
        oidcIssuer = try Self.oidcIssuer(handle)
        let flags = X509_get_extension_flags(handle.pointer)
        isCA = flags & UInt32(EXFLAG_CA) != 0
        isSelfSignedCA = isCA && flags & UInt32(EXFLAG_SS) != 0
        let index = X509_get_ext_by_NID(handle.pointer, NID_ext_key_usage, -1)
        hasCriticalExtendedKeyUsage =
            index >= 0 && X509_EXTENSION_get_critical(X509_get_ext(handle.pointer, index)) == 1
    }

    /// Parses a single PEM `CERTIFICATE` (the `dev.sigstore.cosign/certificate` annotation).
    public init(pem: String) throws(VerificationError) {
        let certificates = try Self.parseChain(pem: pem)
        guard certificates.count == 1 else {
            throw .malformed(what: "certificate PEM", reason: "expected one certificate, found \(certificates.count)")
        }
        self = certificates[0]
    }

    /// Parses every PEM `CERTIFICATE` in `pem`, in order (the `dev.sigstore.cosign/chain` annotation: intermediates
    /// first, root last).
    public static func parseChain(pem: String) throws(VerificationError) -> [Certificate] {
        var certificates: [Certificate] = []
        for block in try PEMBlock.parse(pem, what: "certificate PEM") {
            guard block.label == "CERTIFICATE" else {
                throw .malformed(what: "certificate PEM", reason: "unexpected PEM block '\(block.label)'")
            }
            certificates.append(try Certificate(der: block.der))
        }
        return certificates
    }

    public var description: String {
        let names = alternativeNames.map(\.description).joined(separator: ", ")
        return "certificate [\(subject.isEmpty ? names : subject)] issued by [\(issuer)]"
    }

    /// Whether the certificate may sign code: an extended key usage naming code signing (or any usage), or, as
    /// Go's `x509.Verify` treats it, no extended key usage extension at all when `allowAbsent`.
    public func permitsCodeSigning(allowAbsent: Bool) -> Bool {
        guard let usages = extendedKeyUsages else { return allowAbsent }
        return usages.contains(Self.codeSigningOID) || usages.contains(Self.anyExtendedKeyUsageOID)
    }

    // MARK: - Decoding

    private static func name(_ name: OpaquePointer?) -> String {
        guard let name, let bio = BIO_new(BIO_s_mem()) else { return "" }
        defer { BIO_free(bio) }
        guard X509_NAME_print_ex(bio, name, 0, mcvfs_XN_FLAG_RFC2253()) >= 0 else { return "" }
        var data: UnsafeMutablePointer<CChar>? = nil
        let length = mcvfs_BIO_get_mem_data(bio, &data)
        guard length > 0, let data else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }

    private static func alternativeNames(_ handle: X509Handle) throws(VerificationError) -> [AlternativeName] {
        var critical: Int32 = 0
        guard let raw = X509_get_ext_d2i(handle.pointer, NID_subject_alt_name, &critical, nil) else {
            // -1: absent; anything else: present but undecodable, which must not read as "no names".
            if critical != -1 { throw .malformed(what: "certificate", reason: "undecodable subject alternative names") }
            return []
        }
        let names = OpaquePointer(raw)
        defer { mcvfs_GENERAL_NAMES_free(names) }
        var result: [AlternativeName] = []
        for index in 0..<mcvfs_sk_GENERAL_NAME_num(names) {
            var type: Int32 = 0
            guard let entry = mcvfs_sk_GENERAL_NAME_value(names, index),
                let string = mcvfs_GENERAL_NAME_string(entry, &type)
            else { continue }
            let value = String(decoding: asn1Bytes(string), as: UTF8.self)
            switch type {
            case GEN_EMAIL: result.append(.email(value))
            case GEN_URI: result.append(.uri(value))
            case GEN_DNS: result.append(.dns(value))
            default: break
            }
        }
        return result
    }

    private static func extendedKeyUsages(_ handle: X509Handle) throws(VerificationError) -> [String]? {
        var critical: Int32 = 0
        guard let raw = X509_get_ext_d2i(handle.pointer, NID_ext_key_usage, &critical, nil) else {
            if critical != -1 { throw .malformed(what: "certificate", reason: "undecodable extended key usage") }
            return nil
        }
        let usages = OpaquePointer(raw)
        defer { mcvfs_EXTENDED_KEY_USAGE_free(usages) }
        return (0..<mcvfs_sk_ASN1_OBJECT_num(usages)).map { dottedOID(mcvfs_sk_ASN1_OBJECT_value(usages, $0)) }
    }

    private static func extensionValue(_ handle: X509Handle, oid: String) -> Data? {
        for index in 0..<X509_get_ext_count(handle.pointer) {
            let ext = X509_get_ext(handle.pointer, index)
            if dottedOID(X509_EXTENSION_get_object(ext)) == oid {
                return asn1Bytes(UnsafePointer(X509_EXTENSION_get_data(ext)))
            }
        }
        return nil
    }

    private static func oidcIssuer(_ handle: X509Handle) throws(VerificationError) -> String? {
        if let value = extensionValue(handle, oid: issuerV2OID) {
            guard let text = DER.utf8String(value) else {
                throw .malformed(
                    what: "certificate", reason: "OIDC issuer extension \(issuerV2OID) is not a UTF8String")
            }
            return text
        }
        if let value = extensionValue(handle, oid: issuerV1OID) {
            return String(decoding: value, as: UTF8.self)
        }
        return nil
    }
}

/// The sliver of DER mcvfs decodes itself.
enum DER {
    /// The content of a DER `UTF8String` (tag 0x0c) that fills `data` exactly.
    static func utf8String(_ data: Data) -> String? {
        let bytes = [UInt8](data)
        guard bytes.count >= 2, bytes[0] == 0x0c else { return nil }
        var length = 0
        var offset = 2
        if bytes[1] < 0x80 {
            length = Int(bytes[1])
        } else {
            let count = Int(bytes[1] & 0x7f)
            guard count >= 1, count <= 3, bytes.count >= 2 + count else { return nil }
            for byte in bytes[2..<(2 + count)] { length = length << 8 | Int(byte) }
            offset += count
        }
        guard offset + length == bytes.count else { return nil }
        return String(validating: bytes[offset...], as: UTF8.self)
    }
}
