import Foundation

/// A Sigstore bundle (v0.1–v0.3, `application/vnd.dev.sigstore.bundle*`), the format cosign v3 signs and attests
/// with: verification material (certificate or key hint, transparency-log entries) and a DSSE envelope.
/// https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_bundle.proto
///
/// Only DSSE-envelope bundles are read; message-signature bundles (blob signing) are refused as malformed.
public struct SigstoreBundle: Sendable, Equatable {
    public let mediaType: String
    /// The signing certificate (`certificate`, or the first of `x509CertificateChain`); `nil` for key-based bundles.
    public let certificate: Certificate?
    /// Further chain certificates a v0.1/v0.2 bundle carries (untrusted candidates only).
    public let chain: [Certificate]
    public let envelope: DSSEEnvelope
    public let transparencyLogEntries: [TransparencyLogEntry]

    /// Bundles from v0.2 on must prove inclusion (Merkle proof and signed checkpoint), not only promise it (SET);
    /// v0.1 bundles (`application/vnd.dev.sigstore.bundle+json;version=0.1`) may carry the promise alone.
    public var requiresInclusionProof: Bool {
        !(mediaType == "application/vnd.dev.sigstore.bundle+json;version=0.1"
            || mediaType == "application/vnd.dev.sigstore.bundle.v0.1+json")
    }

    /// Parses the bundle JSON.
    /// - Throws: `VerificationError.malformed`.
    public init(json: Data) throws(VerificationError) {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: json)
        } catch {
            throw .malformed(what: "Sigstore bundle", reason: "\(error)")
        }
        guard wire.mediaType.hasPrefix("application/vnd.dev.sigstore.bundle") else {
            throw .malformed(what: "Sigstore bundle", reason: "media type \(wire.mediaType)")
        }
        mediaType = wire.mediaType
        var certificates: [Certificate] = []
        if let raw = wire.verificationMaterial.certificate?.rawBytes {
            certificates.append(try Certificate(der: decodeBase64(raw, what: "bundle certificate")))
        }
        for raw in wire.verificationMaterial.x509CertificateChain?.certificates ?? [] {
            certificates.append(try Certificate(der: decodeBase64(raw.rawBytes, what: "bundle certificate chain")))
        }
        certificate = certificates.first
        chain = Array(certificates.dropFirst())
        guard let dsse = wire.dsseEnvelope else {
            throw .malformed(what: "Sigstore bundle", reason: "no DSSE envelope (message signatures are not supported)")
        }
        var signatures: [Data] = []
        for signature in dsse.signatures {
            signatures.append(try decodeBase64(signature.sig, what: "DSSE signature"))
        }
        envelope = DSSEEnvelope(
            payload: try decodeBase64(dsse.payload, what: "DSSE payload"), payloadType: dsse.payloadType,
            signatures: signatures)
        var entries: [TransparencyLogEntry] = []
        for entry in wire.verificationMaterial.tlogEntries ?? [] {
            entries.append(try TransparencyLogEntry(entry))
        }
        transparencyLogEntries = entries
    }

    struct Wire: Decodable {
        struct Raw: Decodable { let rawBytes: String }
        struct Chain: Decodable { let certificates: [Raw] }
        struct Material: Decodable {
            let certificate: Raw?
            let x509CertificateChain: Chain?
            let tlogEntries: [Entry]?
        }
        struct Entry: Decodable {
            struct LogID: Decodable { let keyId: String }
            struct KindVersion: Decodable {
                let kind: String
                let version: String
            }
            struct Promise: Decodable { let signedEntryTimestamp: String }
            struct Proof: Decodable {
                struct Checkpoint: Decodable { let envelope: String }
                let logIndex: String
                let rootHash: String
                let treeSize: String
                let hashes: [String]
                let checkpoint: Checkpoint?
            }
            let logIndex: String
            let logId: LogID
            let kindVersion: KindVersion
            let integratedTime: String?
            let inclusionPromise: Promise?
            let inclusionProof: Proof?
            let canonicalizedBody: String
        }
        struct Envelope: Decodable {
            struct Signature: Decodable { let sig: String }
            let payload: String
            let payloadType: String
            let signatures: [Signature]
        }
        let mediaType: String
        let verificationMaterial: Material
        let dsseEnvelope: Envelope?
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
        subjects = wire.subject.map { Subject(name: $0.name ?? "", digest: $0.digest) }
    }
}
