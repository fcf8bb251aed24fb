import Foundation

extension SigstoreBundle {
    /// The bundle's protobuf JSON form (proto3 JSON mapping: `bytes` as base64, `int64` as a decimal string).
    struct Wire: Decodable {
        struct Raw: Decodable { let rawBytes: String }
        struct Chain: Decodable { let certificates: [Raw]? }
        struct KeyHint: Decodable { let hint: String? }
        struct TimestampData: Decodable {
            struct Signed: Decodable { let signedTimestamp: String }
            let rfc3161Timestamps: [Signed]?
        }
        struct Material: Decodable {
            let certificate: Raw?
            let x509CertificateChain: Chain?
            let publicKey: KeyHint?
            let tlogEntries: [Entry]?
            let timestampVerificationData: TimestampData?
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
                let logIndex: ProtoInt64
                let rootHash: String?
                let treeSize: ProtoInt64
                let hashes: [String]?
                let checkpoint: Checkpoint?
            }
            let logIndex: ProtoInt64
            let logId: LogID
            let kindVersion: KindVersion
            let integratedTime: ProtoInt64?
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
        struct Message: Decodable {
            struct Digest: Decodable {
                let algorithm: String?
                let digest: String
            }
            let messageDigest: Digest?
            let signature: String
        }
        let mediaType: String
        let verificationMaterial: Material
        let dsseEnvelope: Envelope?
        let messageSignature: Message?
    }
}

/// A protobuf `int64` in JSON: a decimal string (what encoders write) or a number (what decoders also accept).
struct ProtoInt64: Decodable, Sendable, Equatable {
    let value: Int64

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int64.self) {
            value = number
        } else if let parsed = Int64(try container.decode(String.self)) {
            value = parsed
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an int64")
        }
    }
}
