import Foundation
import OCI
import Registry
import Verification

/// What verifying one digest under a policy found: the signatures that passed and, for each one that did not, why.
public struct Verdict: Sendable, CustomStringConvertible {
    public enum Layout: String, Sendable, Codable {
        /// A layer of the `sha256-<hex>.sig` image.
        case legacy
        /// A Sigstore bundle attached as an OCI referrer.
        case bundle
    }

    public struct Accepted: Sendable {
        public var layout: Layout
        public var signature: VerifiedSignature
    }

    public struct Rejected: Sendable, CustomStringConvertible {
        public var layout: Layout?
        public var reason: String

        public var description: String { layout.map { "\($0.rawValue) signature: \(reason)" } ?? reason }
    }

    public var digest: Digest
    public var accepted: [Accepted] = []
    public var rejected: [Rejected] = []

    public var isTrusted: Bool { !accepted.isEmpty }

    /// One line: who signed, or why nothing counts.
    public var description: String {
        if isTrusted {
            return "signed by " + accepted.map { $0.signature.signer.description }.joined(separator: ", ")
        }
        if rejected.isEmpty { return "no signature found for \(digest)" }
        return "no valid signature for \(digest): " + rejected.map(\.description).joined(separator: "; ")
    }
}

/// Verifies a manifest digest against a `TrustPolicy`, reading its signatures from the registry.
public struct ImageVerifier: Sendable {
    /// The predicate of a cosign v3 image signature; other bundles about the image are attestations, not signatures.
    public static let signaturePredicate = "https://sigstore.dev/cosign/sign/v1"

    public let policy: TrustPolicy
    private let finder: SignatureFinder

    public init(policy: TrustPolicy, client: RegistryClient, repository: String) {
        self.policy = policy
        self.finder = SignatureFinder(client: client, repository: repository)
    }

    /// Finds and checks every signature of `digest`. A registry that cannot be asked makes the verdict untrusted
    /// with that reason: fail closed, never open.
    public func verify(_ digest: Digest, now: Date = Date()) -> Verdict {
        let found: SignatureFinder.Found
        do {
            found = try finder.signatures(for: digest)
        } catch {
            var verdict = Verdict(digest: digest)
            verdict.rejected.append(.init(layout: nil, reason: "cannot read signatures: \(error)"))
            return verdict
        }
        return Self.verify(found, digest: digest, policy: policy, now: now)
    }

    /// The pure part: checks what was found against the policy.
    public static func verify(_ found: SignatureFinder.Found, digest: Digest, policy: TrustPolicy, now: Date = Date())
        -> Verdict
    {
        var verdict = Verdict(digest: digest)
        verdict.rejected = found.problems.map { .init(layout: nil, reason: $0) }
        guard !policy.verifiers.isEmpty else {
            verdict.rejected.append(.init(layout: nil, reason: policy.description))
            return verdict
        }
        for signature in found.legacy {
            let result = firstAccepting(policy) { verifier throws(VerificationError) -> VerifiedSignature in
                try verifier.verify(signature, digest: digest, now: now)
            }
            switch result {
            case .success(let verified): verdict.accepted.append(.init(layout: .legacy, signature: verified))
            case .failure(let reason): verdict.rejected.append(.init(layout: .legacy, reason: reason))
            }
        }
        for bundle in found.bundles {
            let result = firstAccepting(policy) { verifier throws(VerificationError) -> VerifiedSignature in
                let verified = try verifier.verify(bundle: bundle, digest: digest, now: now)
                guard verified.predicateType == signaturePredicate else {
                    throw .invalidAttestation(
                        reason:
                            "predicate \(verified.predicateType ?? "(none)") is an attestation, not an image signature")
                }
                return verified
            }
            switch result {
            case .success(let verified): verdict.accepted.append(.init(layout: .bundle, signature: verified))
            case .failure(let reason): verdict.rejected.append(.init(layout: .bundle, reason: reason))
            }
        }
        return verdict
    }

    private enum Outcome {
        case success(VerifiedSignature)
        case failure(String)
    }

    /// The first verifier's acceptance, or every verifier's distinct reason.
    private static func firstAccepting(
        _ policy: TrustPolicy, _ check: (CosignVerifier) throws(VerificationError) -> VerifiedSignature
    ) -> Outcome {
        var reasons: [String] = []
        for verifier in policy.verifiers {
            do {
                return .success(try check(verifier))
            } catch {
                if !reasons.contains(error.description) { reasons.append(error.description) }
            }
        }
        return .failure(reasons.joined(separator: " / "))
    }
}
