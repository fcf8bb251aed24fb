import Foundation
import OCI
import Verification

/// Whom an image's signature must come from: one or more alternatives, each a `CosignVerifier` (keys, a keyless
/// identity, required annotations). A signature accepted by any alternative makes the image trusted.
public struct TrustPolicy: Sendable, CustomStringConvertible {
    public var verifiers: [CosignVerifier]
    /// How the policy reads in reports (`key sha256:1234abcd…`, `identity x@y (issuer …)`).
    public var description: String

    public init(verifiers: [CosignVerifier], description: String) {
        self.verifiers = verifiers
        self.description = description
    }

    /// Equal for policies that accept the same signatures (the key of cached verdicts).
    public var fingerprint: String { verifiers.map(\.fingerprint).joined(separator: "+") }

    /// A policy that accepts nothing: what a policy file means for a repository it does not name.
    public static func rejectAll(_ reason: String) -> TrustPolicy {
        TrustPolicy(verifiers: [], description: reason)
    }

    /// Key-based (`--key`): any of `keys`. Log entries in signatures are checked against `transparencyLogs` when
    /// any are given (a `--trusted-root`), and ignored otherwise: the key is what is trusted.
    public static func keys(
        _ keys: [PublicKey], requiredAnnotations: [String: String] = [:], transparencyLogs: [TrustedRoot.Log] = []
    ) -> TrustPolicy {
        TrustPolicy(
            verifiers: [
                CosignVerifier(
                    policy: .key(keys), requiredAnnotations: requiredAnnotations, transparencyLogs: transparencyLogs)
            ],
            description: keys.map { "key sha256:\($0.fingerprint.prefix(16))" }.joined(separator: " or "))
    }

    /// Keyless: a Fulcio certificate for `identity` (issued by `issuer`), logged in Rekor, under `trustedRoot`.
    public static func keyless(
        identity: CosignVerifier.Identity, issuer: String?, trustedRoot: TrustedRoot,
        requiredAnnotations: [String: String] = [:]
    ) -> TrustPolicy {
        TrustPolicy(
            verifiers: [
                CosignVerifier(
                    policy: .keyless(trustedRoot: trustedRoot, identity: identity, issuer: issuer),
                    requiredAnnotations: requiredAnnotations)
            ],
            description: "identity \(identity)" + (issuer.map { " (issuer \($0))" } ?? ""))
    }

    /// Any of `policies`.
    public static func anyOf(_ policies: [TrustPolicy]) -> TrustPolicy {
        TrustPolicy(
            verifiers: policies.flatMap(\.verifiers), description: policies.map(\.description).joined(separator: " or ")
        )
    }
}
