import ContentHash
import Foundation
import OCI

/// What a Rekor entry's body records: what was hashed, and each signature with who made it.
///
/// The body is the logged bytes themselves (the SET signs them; the inclusion proof hashes them), so reading its
/// fields and comparing them with the bundle is as strong as rebuilding it: nothing unlogged is trusted.
struct LogRecord: Equatable {
    enum Hashed: Equatable {
        /// `hashedrekord`: the artifact's digest (for a DSSE bundle logged to Rekor v2: the PAE's digest).
        case artifact(Data)
        /// `dsse`, `intoto`: the DSSE payload's digest.
        case payload(Data)
    }
    struct Signed: Equatable {
        let signature: Data
        /// Certificate DER, or the key's DER SubjectPublicKeyInfo as OpenSSL re-encodes it; `nil` when unreadable.
        let signer: Data?
    }
    let kind: String
    let version: String
    let hashed: Hashed
    let signatures: [Signed]

    /// Decodes a body of the kinds Sigstore clients write: `hashedrekord` 0.0.1/0.0.2, `dsse` 0.0.1/0.0.2 and
    /// `intoto` 0.0.2 (the deprecated in-toto type older cosign logged attestations as). Only SHA-256 is accepted.
    /// - Parameters:
    ///   - kind, version: what the bundle says the entry is (`nil`: whatever the body says).
    /// - Throws: `VerificationError.logEntryMismatch`.
    init(body data: Data, kind expectedKind: String? = nil, version expectedVersion: String? = nil)
        throws(VerificationError)
    {
        func fail(_ why: String) -> VerificationError { .logEntryMismatch(reason: why) }
        guard let body = try? JSONDecoder().decode(JSONValue.self, from: data),
            let kind = body["kind"]?.stringValue, let version = body["apiVersion"]?.stringValue
        else { throw fail("entry body is not a Rekor entry") }
        guard expectedKind ?? kind == kind, expectedVersion ?? version == version else {
            throw fail("entry body is a \(kind) \(version), not what the bundle names")
        }
        self.kind = kind
        self.version = version
        let spec = body["spec"]
        switch (kind, version) {
        case ("hashedrekord", "0.0.1"):
            let hash = spec?["data"]?["hash"]
            hashed = .artifact(try Self.hexSHA256(hash?["algorithm"], hash?["value"]))
            signatures = [
                try Self.signed(spec?["signature"]?["content"], pem: spec?["signature"]?["publicKey"]?["content"])
            ]
        case ("hashedrekord", "0.0.2"):
            let entry = spec?["hashedRekordV002"]
            hashed = .artifact(try Self.base64SHA256(entry?["data"]))
            signatures = [try Self.signed(entry?["signature"]?["content"], verifier: entry?["signature"]?["verifier"])]
        case ("dsse", "0.0.1"):
            let hash = spec?["payloadHash"]
            hashed = .payload(try Self.hexSHA256(hash?["algorithm"], hash?["value"]))
            signatures = try Self.each(spec?["signatures"]) { item throws(VerificationError) in
                try Self.signed(item["signature"], pem: item["verifier"])
            }
        case ("dsse", "0.0.2"):
            let entry = spec?["dsseV002"]
            hashed = .payload(try Self.base64SHA256(entry?["payloadHash"]))
            signatures = try Self.each(entry?["signatures"]) { item throws(VerificationError) in
                try Self.signed(item["content"], verifier: item["verifier"])
            }
        case ("intoto", "0.0.2"):
            let content = spec?["content"]
            let hash = content?["payloadHash"]
            hashed = .payload(try Self.hexSHA256(hash?["algorithm"], hash?["value"]))
            signatures = try Self.each(content?["envelope"]?["signatures"]) { item throws(VerificationError) in
                // Rekor stores this envelope's signatures base64-encoded once more.
                let inner = (item["sig"]?.stringValue).flatMap { try? decodeBase64($0, what: "in-toto signature") }
                return try Self.signed(
                    inner.map { .string(String(decoding: $0, as: UTF8.self)) }, pem: item["publicKey"])
            }
        default:
            throw fail("unsupported entry type \(kind) \(version)")
        }
    }

    private static func each(_ array: JSONValue?, _ transform: (JSONValue) throws(VerificationError) -> Signed)
        throws(VerificationError) -> [Signed]
    {
        var result: [Signed] = []
        for item in array?.arrayValue ?? [] { result.append(try transform(item)) }
        return result
    }

    private static func hexSHA256(_ algorithm: JSONValue?, _ value: JSONValue?) throws(VerificationError) -> Data {
        guard algorithm?.stringValue == "sha256", let hex = value?.stringValue, let digest = Data(hex: hex),
            digest.count == 32
        else { throw .logEntryMismatch(reason: "entry hash is not a sha256 digest") }
        return digest
    }

    private static func base64SHA256(_ hash: JSONValue?) throws(VerificationError) -> Data {
        guard hash?["algorithm"]?.stringValue == "SHA2_256", let text = hash?["digest"]?.stringValue,
            let digest = try? decodeBase64(text, what: "entry digest"), digest.count == 32
        else { throw .logEntryMismatch(reason: "entry digest is not a SHA2_256 digest") }
        return digest
    }

    /// A Rekor v1 signature: base64 signature, base64 of a PEM certificate or public key.
    private static func signed(_ content: JSONValue?, pem: JSONValue?) throws(VerificationError) -> Signed {
        guard let text = content?.stringValue, let signature = try? decodeBase64(text, what: "entry signature") else {
            throw .logEntryMismatch(reason: "entry signature is not base64")
        }
        let block = (pem?.stringValue)
            .flatMap { try? decodeBase64($0, what: "entry verifier") }
            .flatMap { try? PEMBlock.parse(String(decoding: $0, as: UTF8.self), what: "entry verifier").first }
        let signer: Data?
        switch block?.label {
        case "CERTIFICATE": signer = block?.der
        case "PUBLIC KEY": signer = block.flatMap { try? PublicKey(spki: $0.der).spki }
        default: signer = nil
        }
        return Signed(signature: signature, signer: signer)
    }

    /// A Rekor v2 signature: base64 content, and a verifier holding certificate or key DER.
    private static func signed(_ content: JSONValue?, verifier: JSONValue?) throws(VerificationError) -> Signed {
        guard let text = content?.stringValue, let signature = try? decodeBase64(text, what: "entry signature") else {
            throw .logEntryMismatch(reason: "entry signature is not base64")
        }
        var signer: Data?
        if let raw = verifier?["x509Certificate"]?["rawBytes"]?.stringValue {
            signer = try? decodeBase64(raw, what: "entry certificate")
        } else if let raw = verifier?["publicKey"]?["rawBytes"]?.stringValue {
            signer = (try? decodeBase64(raw, what: "entry key")).flatMap { try? PublicKey(spki: $0).spki }
        }
        return Signed(signature: signature, signer: signer)
    }
}

extension TransparencyLogEntry {
    /// Requires the entry to log exactly this bundle's signature, by `signer`, over this content: for a message
    /// signature, a `hashedrekord` of `artifact`; for an envelope, its payload's digest (`dsse`, `intoto`) or, in
    /// Rekor v2's `hashedrekord` encoding of DSSE, the digest of its pre-authentication encoding.
    ///
    /// Without this, a valid proof of any other entry would vouch for this signature (CVE-2022-36056's family).
    /// - Parameter signer: certificate DER, or the key's SPKI, that made the signature.
    /// - Throws: `VerificationError.logEntryMismatch`.
    func requireRecords(_ bundle: SigstoreBundle, signer: Data, artifact: Data?) throws(VerificationError) {
        let record = try LogRecord(body: canonicalizedBody, kind: kind, version: version)
        switch (bundle.content, record.hashed) {
        case (.messageSignature, .artifact(let digest)):
            guard digest == artifact else { throw .logEntryMismatch(reason: "entry hashes another artifact") }
        case (.envelope(let envelope), .payload(let digest)):
            guard digest == Merkle.hash(envelope.payload) else {
                throw .logEntryMismatch(reason: "entry hashes another payload")
            }
        case (.envelope(let envelope), .artifact(let digest)) where isRekorV2:
            guard digest == Merkle.hash(envelope.preAuthenticationEncoding) else {
                throw .logEntryMismatch(reason: "entry hashes another envelope")
            }
        default:
            throw .logEntryMismatch(reason: "a \(kind) \(version) entry cannot log this bundle's content")
        }
        guard record.signatures.count == 1, record.signatures[0].signature == bundle.signature else {
            throw .logEntryMismatch(reason: "entry records another signature")
        }
        guard record.signatures[0].signer == signer else {
            throw .logEntryMismatch(reason: "entry records another key or certificate")
        }
    }
}

extension JSONValue {
    /// The member `key` of an object; `nil` for anything else.
    subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    /// The elements, when this is an array.
    var arrayValue: [JSONValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }
}
