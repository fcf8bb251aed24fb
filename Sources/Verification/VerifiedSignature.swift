import Foundation
import OCI

/// A signature that passed every check of a `CosignVerifier` policy.
public struct VerifiedSignature: Sendable, Equatable, CustomStringConvertible {
    public enum Signer: Sendable, Equatable, CustomStringConvertible {
        /// Signed with this key.
        case key(PublicKey)
        /// Signed with this certificate's key; `identity` is the SAN that matched the policy.
        case certificate(identity: String, issuer: String?, certificate: Certificate)

        public var description: String {
            switch self {
            case .key(let key): return "key sha256:\(key.fingerprint)"
            case .certificate(let identity, let issuer, _):
                return issuer.map { "\(identity) (issuer \($0))" } ?? identity
            }
        }
    }

    /// Where a transparency log recorded the signature, and when (Rekor v1, from a verified SET; a Rekor v2
    /// entry has no time of its own).
    public struct LogEntry: Sendable, Equatable {
        public let logID: String
        public let logIndex: Int64
        public let integratedTime: Date?

        public init(logID: String, logIndex: Int64, integratedTime: Date?) {
            self.logID = logID
            self.logIndex = logIndex
            self.integratedTime = integratedTime
        }
    }

    public let signer: Signer
    public let digest: Digest
    /// The payload's `docker-reference`: the name the signer gave the image (informational; not checked).
    public let dockerReference: String
    /// The payload's `optional` map.
    public let annotations: [String: JSONValue]
    public let logEntry: LogEntry?
    /// For a Sigstore bundle: the in-toto statement's predicate type (`https://sigstore.dev/cosign/sign/v1` for a
    /// cosign v3 signature); `nil` for a legacy simple-signing signature.
    public var predicateType: String? = nil
    /// When the signature was made, as verified evidence fixes it: RFC 3161 timestamps and Rekor v1 integrated
    /// times, earliest first. The signing certificate was valid at each.
    public var signingTimes: [Date] = []

    public var description: String {
        var text = "\(digest) signed by \(signer) as \(dockerReference)"
        if let logEntry {
            text += ", logged" + (logEntry.integratedTime.map { " at \($0.formatted(.iso8601))" } ?? "")
            text += " (index \(logEntry.logIndex))"
        }
        return text
    }
}
