import ContentHash
import Foundation

/// The `dev.sigstore.cosign/bundle` annotation: a Rekor v1 entry and its signed entry timestamp (SET), the log's
/// promise that it included the entry at `integratedTime`.
public struct RekorBundle: Sendable, Equatable {
    /// The SET: the log's signature over `canonicalPayload`.
    public let signedEntryTimestamp: Data
    /// The entry body, base64 of its JSON, exactly as the bundle carries it.
    public let body: String
    public let integratedTime: Int64
    public let logIndex: Int64
    /// Lowercase hex of the log identifier (SHA-256 of the log key's DER SubjectPublicKeyInfo).
    public let logID: String

    public var integratedDate: Date { Date(timeIntervalSince1970: TimeInterval(integratedTime)) }

    private struct Wire: Decodable {
        struct Payload: Decodable {
            let body: String
            let integratedTime: Int64
            let logIndex: Int64
            let logID: String
        }
        let signedEntryTimestamp: String
        let payload: Payload
        // cosign's Go struct fields are exported, hence the capitals.
        enum CodingKeys: String, CodingKey {
            case signedEntryTimestamp = "SignedEntryTimestamp"
            case payload = "Payload"
        }
    }

    public init(signedEntryTimestamp: Data, body: String, integratedTime: Int64, logIndex: Int64, logID: String) {
        self.signedEntryTimestamp = signedEntryTimestamp
        self.body = body
        self.integratedTime = integratedTime
        self.logIndex = logIndex
        self.logID = logID
    }

    /// Parses the annotation's JSON.
    /// - Throws: `VerificationError.invalidSET` when fields are missing or not what cosign writes.
    public init(json: Data) throws(VerificationError) {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: json)
        } catch {
            throw .invalidSET(reason: "bundle is not valid JSON of the expected shape: \(error)")
        }
        guard let set = try? decodeBase64(wire.signedEntryTimestamp, what: "SET") else {
            throw .invalidSET(reason: "SignedEntryTimestamp is not base64")
        }
        self.init(
            signedEntryTimestamp: set, body: wire.payload.body, integratedTime: wire.payload.integratedTime,
            logIndex: wire.payload.logIndex, logID: wire.payload.logID)
    }

    /// What the SET signs: the RFC 8785 canonical JSON of `{body, integratedTime, logID, logIndex}`
    /// (keys in code-point order, integers in decimal, no whitespace).
    public var canonicalPayload: Data {
        let text =
            "{\"body\":" + JSONText.canonicalString(body) + ",\"integratedTime\":\(integratedTime)"
            + ",\"logID\":" + JSONText.canonicalString(logID) + ",\"logIndex\":\(logIndex)}"
        return Data(text.utf8)
    }

    /// Verifies the SET with the log named by `logID` among `logs`, and that the log's key was valid at
    /// `integratedTime`.
    /// - Returns: the log that signed.
    /// - Throws: `VerificationError.invalidSET`.
    @discardableResult
    public func verifySET(logs: [TrustedRoot.Log]) throws(VerificationError) -> TrustedRoot.Log {
        guard let id = Data(hex: logID), id.count == 32 else {
            throw .invalidSET(reason: "logID '\(logID)' is not hex")
        }
        guard let log = logs.first(where: { $0.logID == id }) else {
            throw .invalidSET(reason: "no trusted transparency log has ID \(logID)")
        }
        guard log.validity.contains(integratedDate) else {
            throw .invalidSET(reason: "log \(logID.prefix(16)) key was not valid at integratedTime \(integratedTime)")
        }
        guard (try? log.publicKey.isValidSignature(signedEntryTimestamp, over: canonicalPayload)) == true else {
            throw .invalidSET(reason: "signature does not verify with log \(logID.prefix(16)) key")
        }
        return log
    }

    /// Checks that the logged entry is this signature: a `hashedrekord` whose hash is SHA-256 of `payload`, whose
    /// signature is `signature`, and whose public key (or certificate) is `signer`.
    ///
    /// Without this, a valid SET for any other entry would vouch for this signature.
    /// - Parameter signer: DER of the certificate, or DER SubjectPublicKeyInfo of the key, that made the signature.
    /// - Throws: `VerificationError.invalidSET`.
    public func requireEntry(payload: Data, signature: Data, signer: Data) throws(VerificationError) {
        guard let bodyData = try? decodeBase64(body, what: "Rekor entry body") else {
            throw .invalidSET(reason: "entry body is not base64")
        }
        let entry: HashedRekord
        do {
            entry = try JSONDecoder().decode(HashedRekord.self, from: bodyData)
        } catch {
            throw .invalidSET(reason: "entry body is not a Rekor entry: \(error)")
        }
        guard entry.kind == "hashedrekord", entry.apiVersion == "0.0.1" else {
            throw .invalidSET(reason: "unsupported Rekor entry kind \(entry.kind) \(entry.apiVersion)")
        }
        guard entry.spec.data.hash.algorithm == "sha256",
            entry.spec.data.hash.value.lowercased() == SHA256Hasher.digest(payload).hex
        else {
            throw .invalidSET(reason: "entry hashes another payload (\(entry.spec.data.hash.value.prefix(16))…)")
        }
        guard (try? decodeBase64(entry.spec.signature.content, what: "entry signature")) == signature else {
            throw .invalidSET(reason: "entry records another signature")
        }
        guard let pem = try? decodeBase64(entry.spec.signature.publicKey.content, what: "entry key"),
            let block = try? PEMBlock.parse(String(decoding: pem, as: UTF8.self), what: "entry key").first
        else { throw .invalidSET(reason: "entry public key is not PEM") }
        let recorded: Data?
        switch block.label {
        case "CERTIFICATE": recorded = block.der
        case "PUBLIC KEY": recorded = try? PublicKey(spki: block.der).spki
        default: recorded = nil
        }
        guard recorded == signer else { throw .invalidSET(reason: "entry records another key or certificate") }
    }

    private struct HashedRekord: Decodable {
        struct Spec: Decodable {
            struct DataField: Decodable {
                struct Hash: Decodable {
                    let algorithm: String
                    let value: String
                }
                let hash: Hash
            }
            struct Signature: Decodable {
                struct Key: Decodable { let content: String }
                let content: String
                let publicKey: Key
            }
            let data: DataField
            let signature: Signature
        }
        let apiVersion: String
        let kind: String
        let spec: Spec
    }
}
