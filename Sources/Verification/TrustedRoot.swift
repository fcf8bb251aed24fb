import Foundation

/// The Sigstore trust material verification runs against: Fulcio CAs, Rekor logs, CT logs.
///
/// Parsed from `trusted_root.json` (protobuf-specs `dev.sigstore.trustedroot.v1.TrustedRoot`, JSON form):
/// https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_trustroot.proto
public struct TrustedRoot: Sendable, Equatable {
    /// A half-open validity window; `nil` bounds are unbounded.
    public struct Validity: Sendable, Equatable {
        public var start: Date?
        public var end: Date?

        public init(start: Date? = nil, end: Date? = nil) {
            self.start = start
            self.end = end
        }

        public func contains(_ date: Date) -> Bool {
            if let start, date < start { return false }
            if let end, date > end { return false }
            return true
        }
    }

    /// A Fulcio (or other) CA: its chain, intermediates first and the self-signed root last.
    public struct CertificateAuthority: Sendable, Equatable {
        public var uri: String
        public var chain: [Certificate]
        public var validity: Validity

        public init(uri: String = "", chain: [Certificate], validity: Validity = Validity()) {
            self.uri = uri
            self.chain = chain
            self.validity = validity
        }
    }

    /// A transparency log (Rekor) or certificate-transparency log and the key it signs with.
    public struct Log: Sendable, Equatable {
        public var baseURL: String
        public var publicKey: PublicKey
        /// The log's identifier; for Rekor v1 and CT logs, SHA-256 of the key's DER SubjectPublicKeyInfo.
        public var logID: Data
        public var validity: Validity

        /// A log whose identifier is derived from its key, as Rekor v1 and RFC 6962 logs do.
        public init(baseURL: String = "", publicKey: PublicKey, validity: Validity = Validity()) {
            self.init(
                baseURL: baseURL, publicKey: publicKey, logID: Data(hex: publicKey.fingerprint)!, validity: validity)
        }

        public init(baseURL: String, publicKey: PublicKey, logID: Data, validity: Validity) {
            self.baseURL = baseURL
            self.publicKey = publicKey
            self.logID = logID
            self.validity = validity
        }
    }

    public var certificateAuthorities: [CertificateAuthority]
    public var transparencyLogs: [Log]
    public var certificateTransparencyLogs: [Log]

    public init(
        certificateAuthorities: [CertificateAuthority], transparencyLogs: [Log], certificateTransparencyLogs: [Log] = []
    ) {
        self.certificateAuthorities = certificateAuthorities
        self.transparencyLogs = transparencyLogs
        self.certificateTransparencyLogs = certificateTransparencyLogs
    }

    /// The Sigstore public-good instance's root, as bundled with mcvfs (see `PublicGoodTrustedRoot.swift`).
    public static func publicGood() throws(VerificationError) -> TrustedRoot {
        try TrustedRoot(json: publicGoodJSON)
    }

    /// The bundled `trusted_root.json` text itself (for `--trusted-root` users who want a starting point).
    public static var publicGoodJSON: Data { Data((publicGoodTrustedRootJSON + "\n").utf8) }

    /// Parses `trusted_root.json`. Keys the verifier cannot use (unknown algorithms) are skipped, so a newer
    /// root still loads; a CA certificate that does not parse is an error.
    /// - Throws: `VerificationError.malformed`.
    public init(json: Data) throws(VerificationError) {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: json)
        } catch {
            throw .malformed(what: "trusted root", reason: "\(error)")
        }
        var authorities: [CertificateAuthority] = []
        for authority in wire.certificateAuthorities ?? [] {
            var chain: [Certificate] = []
            for raw in authority.certChain.certificates {
                chain.append(try Certificate(der: decodeBase64(raw.rawBytes, what: "trusted root certificate")))
            }
            authorities.append(
                CertificateAuthority(
                    uri: authority.uri ?? "", chain: chain, validity: try Self.validity(authority.validFor)))
        }
        certificateAuthorities = authorities
        transparencyLogs = try Self.logs(wire.tlogs ?? [])
        certificateTransparencyLogs = try Self.logs(wire.ctlogs ?? [])
    }

    private static func logs(_ wires: [Wire.Log]) throws(VerificationError) -> [Log] {
        var logs: [Log] = []
        for wire in wires {
            guard let raw = wire.publicKey.rawBytes,
                let key = try? PublicKey(spki: decodeBase64(raw, what: "trusted root log key"))
            else { continue }
            logs.append(
                Log(
                    baseURL: wire.baseUrl ?? "", publicKey: key,
                    logID: try decodeBase64(wire.logId.keyId, what: "trusted root log id"),
                    validity: try validity(wire.publicKey.validFor)))
        }
        return logs
    }

    private static func validity(_ wire: Wire.Validity?) throws(VerificationError) -> Validity {
        Validity(start: try wire?.start.map(parseTimestamp), end: try wire?.end.map(parseTimestamp))
    }

    /// Protobuf JSON timestamps: RFC 3339, `Z`, optional fractional seconds.
    static func parseTimestamp(_ text: String) throws(VerificationError) -> Date {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        if let date = formatter.date(from: text) { return date }
        throw .malformed(what: "trusted root", reason: "timestamp '\(text)' is not RFC 3339")
    }

    private struct Wire: Decodable {
        struct Validity: Decodable {
            let start: String?
            let end: String?
        }
        struct Log: Decodable {
            struct Key: Decodable {
                let rawBytes: String?
                let keyDetails: String?
                let validFor: Validity?
            }
            struct LogID: Decodable { let keyId: String }
            let baseUrl: String?
            let publicKey: Key
            let logId: LogID
        }
        struct Authority: Decodable {
            struct Chain: Decodable { let certificates: [Raw] }
            struct Raw: Decodable { let rawBytes: String }
            let uri: String?
            let certChain: Chain
            let validFor: Validity?
        }
        let mediaType: String?
        let tlogs: [Log]?
        let certificateAuthorities: [Authority]?
        let ctlogs: [Log]?
    }

    /// The transparency log whose identifier is `logID`, if any.
    func transparencyLog(id logID: Data) -> Log? {
        transparencyLogs.first { $0.logID == logID }
    }
}
