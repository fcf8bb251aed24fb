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
        guard
            (try? log.publicKey.isValidSignature(
                signedEntryTimestamp, over: canonicalPayload, hash: log.publicKey.naturalHash)) == true
        else {
            throw .invalidSET(reason: "signature does not verify with log \(logID.prefix(16)) key")
        }
        return log
    }

    /// Checks that the logged entry is this signature: a `hashedrekord` 0.0.1 whose hash is SHA-256 of `payload`,
    /// whose signature is `signature`, and whose public key (or certificate) is `signer`.
    ///
    /// Without this, a valid SET for any other entry would vouch for this signature.
    /// - Parameter signer: DER of the certificate, or DER SubjectPublicKeyInfo of the key, that made the signature.
    /// - Throws: `VerificationError.logEntryMismatch`.
    public func requireEntry(payload: Data, signature: Data, signer: Data) throws(VerificationError) {
        guard let bodyData = try? decodeBase64(body, what: "Rekor entry body") else {
            throw .logEntryMismatch(reason: "entry body is not base64")
        }
        let record = try LogRecord(body: bodyData)
        guard record.kind == "hashedrekord", record.version == "0.0.1" else {
            throw .logEntryMismatch(reason: "unsupported Rekor entry kind \(record.kind) \(record.version)")
        }
        guard record.hashed == .artifact(Merkle.hash(payload)) else {
            throw .logEntryMismatch(reason: "entry hashes another payload")
        }
        guard record.signatures.first?.signature == signature else {
            throw .logEntryMismatch(reason: "entry records another signature")
        }
        guard record.signatures.first?.signer == signer else {
            throw .logEntryMismatch(reason: "entry records another key or certificate")
        }
    }
}
