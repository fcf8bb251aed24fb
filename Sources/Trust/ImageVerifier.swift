import Foundation
import OCI
import Registry
import Synchronization
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

    /// Where the signatures were read.
    public enum Source: Sendable, Equatable {
        case registry
        /// The signature store, because the registry could not be asked (`reason`).
        case stored(reason: String)
    }

    public var digest: Digest
    public var accepted: [Accepted] = []
    public var rejected: [Rejected] = []
    public var source: Source = .registry
    /// What did not fail the verdict but is worth a log line (signatures that could not be stored).
    public var notes: [String] = []

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

/// Verifies a manifest digest against a `TrustPolicy`, reading its signatures from the registry and keeping them
/// in a `SignatureStore`; when the registry cannot be asked (down, stalling, or `client` is `nil` offline), the
/// stored signatures are verified instead, under the same policy and trusted root. An image with no stored
/// signatures is refused; a stored artifact altered on disk fails its own check.
///
/// After the first unreachable answer the registry is not asked again by this verifier: every further digest
/// goes straight to the store, so an outage costs one timeout, not one per image.
public final class ImageVerifier: Sendable {
    /// The predicate of a cosign v3 image signature; other bundles about the image are attestations, not signatures.
    public static let signaturePredicate = SigstoreBundle.imageSignaturePredicate

    public let policy: TrustPolicy
    private let registry: (any SignatureSource)?
    private let repository: String
    private let store: SignatureStore?
    private let cache: VerdictCache
    /// Why the registry could not be asked, once it could not. A leaf lock, held only to read or set it.
    private let unreachable = Mutex<String?>(nil)

    /// - Parameters:
    ///   - client: the registry (or its mirror); `nil` to verify stored signatures only.
    ///   - store: where signatures are kept for outages; `nil` keeps nothing.
    ///   - cache: verdicts reused within the process.
    public convenience init(
        policy: TrustPolicy, client: RegistryClient?, repository: String, store: SignatureStore? = nil,
        cache: VerdictCache = .shared
    ) {
        self.init(
            policy: policy, source: client.map { RegistrySignatureSource(client: $0, repository: repository) },
            repository: repository, store: store, cache: cache)
    }

    /// - Parameter source: where signatures are read first (the registry); `nil` to verify stored ones only.
    public init(
        policy: TrustPolicy, source: (any SignatureSource)?, repository: String, store: SignatureStore? = nil,
        cache: VerdictCache = .shared
    ) {
        self.policy = policy
        self.registry = source
        self.repository = repository
        self.store = store
        self.cache = cache
    }

    /// Finds and checks every signature of `digest`. Fails closed: a verdict is trusted only when a signature
    /// verified, from the registry or from the store.
    public func verify(_ digest: Digest, now: Date = Date()) -> Verdict {
        let key = VerdictCache.Key(policy: policy.fingerprint, repository: repository, digest: digest)
        if let known = cache.verdict(for: key) { return known }
        var verdict: Verdict
        if let registry, unreachable.withLock({ $0 }) == nil {
            let recorder = RecordingSource(registry)
            do {
                let found = try SignatureFinder(source: recorder).signatures(for: digest)
                verdict = Self.verify(found, digest: digest, policy: policy, now: now)
                // What the registry answered replaces what was stored (a signature removed there is gone here
                // too), unless some answer was unusable and nothing verified: a flaky answer must not erase a
                // good record.
                if found.problems.isEmpty || verdict.isTrusted {
                    do { try store?.save(recorder.recording, for: digest) } catch {
                        verdict.notes.append("signatures not stored for outages: \(error)")
                    }
                }
            } catch {
                unreachable.withLock { $0 = "\(error)" }
                verdict = stored(digest, now: now, because: "the registry is unreachable (\(error))")
            }
        } else {
            verdict = stored(
                digest, now: now,
                because: unreachable.withLock { $0 }.map {
                    "the registry is unreachable (\($0))"
                } ?? "offline")
        }
        cache.remember(verdict, for: key)
        return verdict
    }

    /// The verdict on the signatures stored for `digest`.
    private func stored(_ digest: Digest, now: Date, because reason: String) -> Verdict {
        var verdict = Verdict(digest: digest)
        do {
            guard let store, let source = try store.source(for: digest) else {
                verdict.rejected.append(.init(layout: nil, reason: "\(reason) and no signature of it is stored"))
                return verdict
            }
            verdict = Self.verify(
                try SignatureFinder(source: source).signatures(for: digest), digest: digest,
                policy: policy, now: now)
        } catch {
            verdict.rejected.append(
                .init(layout: nil, reason: "\(reason) and its stored signatures are unusable: \(error)"))
        }
        verdict.source = .stored(reason: reason)
        return verdict
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
