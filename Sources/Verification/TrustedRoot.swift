import ContentHash
import Foundation

/// The Sigstore trust material verification runs against: Fulcio CAs, Rekor logs, CT logs, timestamp authorities.
///
/// Parsed from `trusted_root.json` (protobuf-specs `dev.sigstore.trustedroot.v1.TrustedRoot`, JSON form):
/// https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_trustroot.proto
public struct TrustedRoot: Sendable, Equatable {
    /// A validity window; `nil` bounds are open. Both ends are included (protobuf-specs `TimeRange` is closed).
    public struct Validity: Sendable, Equatable, CustomStringConvertible {
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

        public var description: String {
            "[\(start.map(Self.format) ?? "open"), \(end.map(Self.format) ?? "open")]"
        }

        static func format(_ date: Date) -> String { date.formatted(.iso8601) }
    }

    /// A Fulcio (or other) CA, or a timestamp authority: its chain, the issuing certificate first and the
    /// self-signed root last (a timestamp authority's chain may start with its signing certificate).
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
        /// The log's identifier as bundles name it: for Rekor v1 and CT logs SHA-256 of the key's DER
        /// SubjectPublicKeyInfo; for Rekor v2 logs the C2SP signed-note key ID (see `checkpointKeyID`).
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

        /// The name a Rekor v2 log signs its checkpoints as, and their origin line: its URL's host.
        public var origin: String { URL(string: baseURL)?.host ?? baseURL }

        /// The key ID whose first four bytes mark this log's checkpoint signatures, as C2SP signed-note and
        /// rekor-tiles compute it: SHA-256 of the DER SubjectPublicKeyInfo for ECDSA keys (the Rekor v1 log ID);
        /// SHA-256(name || "\n" || 0x01 || raw key) for Ed25519; SHA-256(name || "\n" || 0xff ||
        /// "PKIX-RSA-PKCS#1v1.5" || SPKI) for RSA.
        /// https://github.com/C2SP/C2SP/blob/main/signed-note.md
        public func checkpointKeyID(name: String) -> Data {
            var input = Data(name.utf8)
            input.append(0x0a)
            switch publicKey.algorithm {
            case .ecdsaP256, .ecdsaP384, .ecdsaP521: return Data(hex: publicKey.fingerprint)!
            case .ed25519:
                input.append(0x01)
                input.append(publicKey.spki.suffix(32))
            case .rsa:
                input.append(0xff)
                input.append(Data("PKIX-RSA-PKCS#1v1.5".utf8))
                input.append(publicKey.spki)
            }
            return Data(hex: SHA256Hasher.digest(input).hex)!
        }
    }

    public var certificateAuthorities: [CertificateAuthority]
    public var transparencyLogs: [Log]
    public var certificateTransparencyLogs: [Log]
    public var timestampAuthorities: [CertificateAuthority]

    public init(
        certificateAuthorities: [CertificateAuthority], transparencyLogs: [Log],
        certificateTransparencyLogs: [Log] = [],
        timestampAuthorities: [CertificateAuthority] = []
    ) {
        self.certificateAuthorities = certificateAuthorities
        self.transparencyLogs = transparencyLogs
        self.certificateTransparencyLogs = certificateTransparencyLogs
        self.timestampAuthorities = timestampAuthorities
    }

    /// The Sigstore public-good instance's root, as bundled with mcvfs (see `PublicGoodTrustedRoot.swift`).
    public static func publicGood() throws(VerificationError) -> TrustedRoot {
        try TrustedRoot(json: publicGoodJSON)
    }

    /// The bundled `trusted_root.json` text itself (for `--trusted-root` users who want a starting point).
    public static var publicGoodJSON: Data { Data((publicGoodTrustedRootJSON + "\n").utf8) }

    /// Parses `trusted_root.json`. Keys and certificates the verifier cannot use (unknown algorithms) are skipped,
    /// so a newer root still loads; what would change the meaning of what is kept is an error: a log without a
    /// validity start (sigstore-go and sigstore-python refuse it too, rather than read it as "always valid"), a
    /// CA certificate that does not parse.
    /// - Throws: `VerificationError.malformed`.
    public init(json: Data) throws(VerificationError) {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: json)
        } catch {
            throw .malformed(what: "trusted root", reason: "\(error)")
        }
        if let mediaType = wire.mediaType, !mediaType.hasPrefix("application/vnd.dev.sigstore.trustedroot") {
            throw .malformed(what: "trusted root", reason: "media type \(mediaType)")
        }
        certificateAuthorities = try Self.authorities(wire.certificateAuthorities ?? [], what: "certificate authority")
        timestampAuthorities = try Self.authorities(wire.timestampAuthorities ?? [], what: "timestamp authority")
        transparencyLogs = try Self.logs(wire.tlogs ?? [], what: "transparency log")
        certificateTransparencyLogs = try Self.logs(wire.ctlogs ?? [], what: "CT log")
    }

    private static func authorities(_ wires: [Wire.Authority], what: String) throws(VerificationError)
        -> [CertificateAuthority]
    {
        var authorities: [CertificateAuthority] = []
        for authority in wires {
            var chain: [Certificate] = []
            for raw in authority.certChain.certificates {
                chain.append(try Certificate(der: decodeBase64(raw.rawBytes, what: "trusted root certificate")))
            }
            guard !chain.isEmpty else {
                throw .malformed(what: "trusted root", reason: "\(what) \(authority.uri ?? "") has an empty chain")
            }
            authorities.append(
                CertificateAuthority(uri: authority.uri ?? "", chain: chain, validity: try validity(authority.validFor))
            )
        }
        return authorities
    }

    private static func logs(_ wires: [Wire.Log], what: String) throws(VerificationError) -> [Log] {
        var logs: [Log] = []
        for wire in wires {
            guard let raw = wire.publicKey.rawBytes,
                let key = try? PublicKey(spki: decodeBase64(raw, what: "trusted root log key"))
            else { continue }
            guard wire.publicKey.validFor?.start != nil else {
                throw .malformed(
                    what: "trusted root", reason: "\(what) \(wire.baseUrl ?? wire.logId.keyId) has no validity start")
            }
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
        let timestampAuthorities: [Authority]?
    }

    /// A digest of everything verification reads from this root: equal roots, equal fingerprints (for caches of
    /// verification results, which must not outlive a change of trust).
    public var fingerprint: String {
        var text = ""
        for (label, authorities) in [("ca", certificateAuthorities), ("tsa", timestampAuthorities)] {
            for authority in authorities {
                text +=
                    "\(label) \(authority.validity) "
                    + authority.chain.map { SHA256Hasher.digest($0.der).hex }.joined(separator: ",") + "\n"
            }
        }
        for (label, logs) in [("tlog", transparencyLogs), ("ctlog", certificateTransparencyLogs)] {
            for log in logs {
                text += "\(label) \(log.baseURL) \(log.logID.hexString) \(log.publicKey.fingerprint) \(log.validity)\n"
            }
        }
        return SHA256Hasher.digest(Data(text.utf8)).hex
    }
}
