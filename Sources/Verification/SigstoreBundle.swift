import Foundation
import OCI

/// A Sigstore bundle, v0.1 to v0.3 (`application/vnd.dev.sigstore.bundle*`): verification material (a certificate
/// or a key hint), transparency-log entries, RFC 3161 timestamps, and either a message signature over an artifact
/// (`cosign sign-blob`, sigstore-python) or a DSSE envelope (cosign v3 image signatures and attestations).
/// https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_bundle.proto
///
/// Parsing enforces what the format's version promises, as sigstore-go and sigstore-python do: v0.1 entries carry
/// a signed entry timestamp, v0.2 and later ones an inclusion proof; v0.3 holds one certificate, never a chain; a
/// chain never includes a root; a DSSE envelope holds exactly one signature.
public struct SigstoreBundle: Sendable, Equatable {
    /// The bundle format version, v0.N.
    public enum Version: Int, Sendable, Comparable, CustomStringConvertible {
        case v01 = 1
        case v02 = 2
        case v03 = 3

        public static func < (a: Version, b: Version) -> Bool { a.rawValue < b.rawValue }
        public var description: String { "v0.\(rawValue)" }
    }

    /// Who signed: a certificate (keyless, or a bring-your-own PKI), or a key the verifier must already hold.
    public enum Material: Sendable, Equatable {
        /// The signing certificate; `chain` holds the further certificates a v0.1/v0.2 bundle carries (untrusted
        /// candidates only, never roots).
        case certificate(Certificate, chain: [Certificate])
        /// A key-based signature; the hint names the key but proves nothing.
        case publicKey(hint: String)
    }

    /// A signature over an artifact's digest (`hashedrekord` entries).
    public struct MessageSignature: Sendable, Equatable {
        /// `SHA2_256`, ...; `nil` when the bundle omits the digest (it is only a hint).
        public let digestAlgorithm: String?
        public let digest: Data?
        public let signature: Data
    }

    public enum Content: Sendable, Equatable {
        case envelope(DSSEEnvelope)
        case messageSignature(MessageSignature)
    }

    /// At most this many log entries and timestamps are read (sigstore-go's limits): a bundle cannot make a
    /// verifier do unbounded work.
    public static let maxEntries = 32

    public let mediaType: String
    public let version: Version
    public let material: Material
    public let content: Content
    public let transparencyLogEntries: [TransparencyLogEntry]
    /// DER `TimeStampResp` values of `timestampVerificationData.rfc3161Timestamps`.
    public let timestamps: [Data]

    /// The signing certificate, for certificate-based bundles.
    public var certificate: Certificate? {
        if case .certificate(let certificate, _) = material { return certificate }
        return nil
    }

    /// Further chain certificates a v0.1/v0.2 bundle carries.
    public var chain: [Certificate] {
        if case .certificate(_, let chain) = material { return chain }
        return []
    }

    /// The DSSE envelope, for envelope bundles.
    public var envelope: DSSEEnvelope? {
        if case .envelope(let envelope) = content { return envelope }
        return nil
    }

    /// The one signature the bundle is about: the envelope's, or the message signature. Timestamps are over it.
    public var signature: Data {
        switch content {
        case .envelope(let envelope): return envelope.signatures[0]
        case .messageSignature(let message): return message.signature
        }
    }

    /// Bundles from v0.2 on prove inclusion (Merkle proof and signed checkpoint), not only promise it (SET).
    public var requiresInclusionProof: Bool { version >= .v02 }

    /// Parses the bundle JSON.
    /// - Throws: `VerificationError.malformed` naming what is wrong.
    public init(json: Data) throws(VerificationError) {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: json)
        } catch {
            throw .malformed(what: "Sigstore bundle", reason: "\(error)")
        }
        mediaType = wire.mediaType
        version = try Self.version(of: wire.mediaType)
        material = try Self.material(wire.verificationMaterial, version: version)
        content = try Self.content(wire)
        let entries = wire.verificationMaterial.tlogEntries ?? []
        let stamps = wire.verificationMaterial.timestampVerificationData?.rfc3161Timestamps ?? []
        guard entries.count <= Self.maxEntries, stamps.count <= Self.maxEntries else {
            throw .malformed(what: "Sigstore bundle", reason: "more than \(Self.maxEntries) log entries or timestamps")
        }
        var parsed: [TransparencyLogEntry] = []
        for entry in entries {
            let logEntry = try TransparencyLogEntry(entry)
            if version == .v01, logEntry.signedEntryTimestamp == nil {
                throw .malformed(what: "Sigstore bundle", reason: "a v0.1 bundle's log entry has no inclusion promise")
            }
            if version >= .v02, logEntry.inclusionProof == nil {
                throw .malformed(
                    what: "Sigstore bundle", reason: "a \(version) bundle's log entry has no inclusion proof")
            }
            if parsed.contains(where: { $0.logID == logEntry.logID && $0.logIndex == logEntry.logIndex }) {
                throw .malformed(what: "Sigstore bundle", reason: "duplicate log entry \(logEntry.logIndex)")
            }
            parsed.append(logEntry)
        }
        transparencyLogEntries = parsed
        var decoded: [Data] = []
        for stamp in stamps {
            let bytes = try decodeBase64(stamp.signedTimestamp, what: "RFC 3161 timestamp")
            guard !decoded.contains(bytes) else {
                throw .malformed(what: "Sigstore bundle", reason: "duplicate RFC 3161 timestamp")
            }
            decoded.append(bytes)
        }
        timestamps = decoded
    }

    /// The versions there are media types for: `...bundle+json;version=0.N` (v0.1–v0.3), and `...bundle.v0.3+json`
    /// with its patch versions (the JSON media type exists from v0.3 on).
    static func version(of mediaType: String) throws(VerificationError) -> Version {
        let base = "application/vnd.dev.sigstore.bundle"
        let parameterised = base + "+json;version="
        var number: String?
        if mediaType.hasPrefix(parameterised) {
            number = String(mediaType.dropFirst(parameterised.count))
        } else if mediaType.hasPrefix(base + ".v"), mediaType.hasSuffix("+json") {
            let parts = mediaType.dropFirst(base.count + 2).dropLast(5).split(
                separator: ".", omittingEmptySubsequences: false)
            if (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }),
                parts[0] == "0", parts[1] == "3"
            {
                number = "0.3"
            }
        }
        guard let number, number.hasPrefix("0."), let minor = Int(number.dropFirst(2)),
            let version = Version(rawValue: minor)
        else {
            throw .malformed(what: "Sigstore bundle", reason: "unsupported media type \(mediaType)")
        }
        return version
    }

    private static func material(_ wire: Wire.Material, version: Version) throws(VerificationError) -> Material {
        let present = [wire.certificate != nil, wire.x509CertificateChain != nil, wire.publicKey != nil]
        guard present.filter({ $0 }).count == 1 else {
            throw .malformed(
                what: "Sigstore bundle",
                reason: "verification material needs exactly one of certificate, x509CertificateChain, publicKey")
        }
        if let raw = wire.certificate {
            return .certificate(try Certificate(der: decodeBase64(raw.rawBytes, what: "bundle certificate")), chain: [])
        }
        if let chain = wire.x509CertificateChain {
            guard version < .v03 else {
                throw .malformed(what: "Sigstore bundle", reason: "a v0.3 bundle carries a certificate, not a chain")
            }
            var certificates: [Certificate] = []
            for raw in chain.certificates ?? [] {
                certificates.append(try Certificate(der: decodeBase64(raw.rawBytes, what: "bundle certificate chain")))
            }
            guard let leaf = certificates.first else {
                throw .malformed(what: "Sigstore bundle", reason: "the certificate chain is empty")
            }
            // A root in the bundle would invite trusting it; client policy forbids carrying one.
            if let root = certificates.dropFirst().first(where: { $0.isSelfSignedCA }) {
                throw .malformed(
                    what: "Sigstore bundle", reason: "the certificate chain includes the root \(root.subject)")
            }
            return .certificate(leaf, chain: Array(certificates.dropFirst()))
        }
        return .publicKey(hint: wire.publicKey?.hint ?? "")
    }

    private static func content(_ wire: Wire) throws(VerificationError) -> Content {
        switch (wire.dsseEnvelope, wire.messageSignature) {
        case (let dsse?, nil):
            guard dsse.signatures.count == 1 else {
                throw .malformed(
                    what: "Sigstore bundle", reason: "DSSE envelope has \(dsse.signatures.count) signatures, not one")
            }
            return .envelope(
                DSSEEnvelope(
                    payload: try decodeBase64(dsse.payload, what: "DSSE payload"), payloadType: dsse.payloadType,
                    signatures: [try decodeBase64(dsse.signatures[0].sig, what: "DSSE signature")]))
        case (nil, let message?):
            return .messageSignature(
                MessageSignature(
                    digestAlgorithm: message.messageDigest?.algorithm,
                    digest: try message.messageDigest.map { (digest) throws(VerificationError) in
                        try decodeBase64(digest.digest, what: "message digest")
                    },
                    signature: try decodeBase64(message.signature, what: "message signature")))
        default:
            throw .malformed(what: "Sigstore bundle", reason: "needs exactly one of dsseEnvelope, messageSignature")
        }
    }
}

/// A DSSE envelope: https://github.com/secure-systems-lab/dsse/blob/master/envelope.md
public struct DSSEEnvelope: Sendable, Equatable {
    public static let inTotoPayloadType = "application/vnd.in-toto+json"

    public let payload: Data
    public let payloadType: String
    public let signatures: [Data]

    public init(payload: Data, payloadType: String, signatures: [Data]) {
        self.payload = payload
        self.payloadType = payloadType
        self.signatures = signatures
    }

    /// What DSSE signs, the pre-authentication encoding:
    /// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths as ASCII decimal byte counts.
    public var preAuthenticationEncoding: Data {
        var data = Data("DSSEv1 \(payloadType.utf8.count) \(payloadType) \(payload.count) ".utf8)
        data.append(payload)
        return data
    }
}

/// An in-toto statement (v0.1 or v1): https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
public struct InTotoStatement: Sendable, Equatable {
    public struct Subject: Sendable, Equatable {
        public let name: String
        public let digest: [String: String]
        /// The subject's `annotations` (cosign v3 puts `sign -a k=v` pairs here).
        public let annotations: [String: JSONValue]
    }

    public let type: String
    public let predicateType: String
    public let subjects: [Subject]

    /// Parses the statement (the predicate is not interpreted).
    /// - Throws: `VerificationError.invalidAttestation`.
    public init(parsing data: Data) throws(VerificationError) {
        struct Wire: Decodable {
            struct Subject: Decodable {
                let name: String?
                let digest: [String: String]
                let annotations: [String: JSONValue]?
            }
            let _type: String
            let predicateType: String
            let subject: [Subject]
        }
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: data)
        } catch {
            throw .invalidAttestation(reason: "payload is not an in-toto statement: \(error)")
        }
        guard wire._type == "https://in-toto.io/Statement/v0.1" || wire._type == "https://in-toto.io/Statement/v1"
        else { throw .invalidAttestation(reason: "statement type \(wire._type)") }
        type = wire._type
        predicateType = wire.predicateType
        subjects = wire.subject.map {
            Subject(name: $0.name ?? "", digest: $0.digest, annotations: $0.annotations ?? [:])
        }
    }

    /// The first subject whose sha256 digest is `hex`.
    public func subject(sha256 hex: String) -> Subject? {
        subjects.first { $0.digest["sha256"]?.lowercased() == hex }
    }
}
