import ContentHash
import Foundation
import OCI

/// Verifies legacy-layout cosign signatures (one layer of a `sha256-<hex>.sig` image) against a policy, as
/// `cosign verify` does, offline: https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md
///
/// Order of checks (so that a tampered input fails for its own reason): the Rekor SET (it fixes the signing time),
/// the certificate chain at that time, its embedded SCT, identity and issuer, the signature over the exact payload
/// bytes, the logged entry against this signature, and last the payload's digest and annotations.
public struct CosignVerifier: Sendable {
    /// How a certificate's subject alternative names must match.
    public enum Identity: Sendable, Hashable, CustomStringConvertible {
        /// One SAN (email, URI or DNS name) equals this string (`--certificate-identity`).
        case exact(String)
        /// One SAN matches this regular expression anywhere, unanchored like Go's `regexp.MatchString`
        /// (`--certificate-identity-regexp`).
        case regexp(String)

        public var description: String {
            switch self {
            case .exact(let value): return value
            case .regexp(let pattern): return "/\(pattern)/"
            }
        }

        /// The first of `names` that matches.
        func firstMatch(in names: [String]) throws(VerificationError) -> String? {
            switch self {
            case .exact(let value):
                return names.first { $0 == value }
            case .regexp(let pattern):
                let regex: Regex<AnyRegexOutput>
                do {
                    regex = try Regex(pattern)
                } catch {
                    throw .malformed(what: "identity regular expression", reason: "\(error)")
                }
                return names.first { (try? regex.firstMatch(in: $0)) != nil }
            }
        }
    }

    /// Whom to trust.
    public enum Policy: Sendable {
        /// Key-based: the signature verifies with one of these keys (`cosign verify --key`).
        case key([PublicKey])
        /// Keyless: a Fulcio certificate chaining to a CA of `trustedRoot`, logged in one of its Rekor logs (a valid
        /// SET is required), with an SCT from one of its CT logs (when it lists any), whose SAN matches `identity`
        /// and whose OIDC issuer is `issuer` (when given).
        case keyless(trustedRoot: TrustedRoot, identity: Identity, issuer: String?)
        /// Bring-your-own PKI: a certificate chaining to `roots` (through `intermediates` or the signature's chain
        /// annotation). No transparency log is required; without a SET validity is judged at verification time.
        /// A leaf without an extended key usage extension is accepted, as Go's `x509.Verify` does.
        case certificateAuthority(
            roots: [Certificate], intermediates: [Certificate], identity: Identity?, issuer: String?)
    }

    public let policy: Policy
    /// `-a key=value`: each must be a string of that value in the payload's `optional` map.
    public let requiredAnnotations: [String: String]
    /// Rekor logs (beyond a keyless policy's trusted root) whose SETs are accepted, e.g. from an explicit
    /// `rekor.pub`. For key-based signatures a bundle is checked only when some log is known.
    public let transparencyLogs: [TrustedRoot.Log]
    /// Refuse key-based and BYO-PKI signatures without a valid SET (keyless always requires one).
    public let requireTransparencyLog: Bool

    public init(
        policy: Policy, requiredAnnotations: [String: String] = [:], transparencyLogs: [TrustedRoot.Log] = [],
        requireTransparencyLog: Bool = false
    ) {
        self.policy = policy
        self.requiredAnnotations = requiredAnnotations
        self.transparencyLogs = transparencyLogs
        self.requireTransparencyLog = requireTransparencyLog
    }

    /// A digest of the whole policy (keys, identities, trusted root, logs, annotations): verifiers with equal
    /// fingerprints accept the same signatures.
    public var fingerprint: String {
        var text: String
        switch policy {
        case .key(let keys): text = "key " + keys.map(\.fingerprint).sorted().joined(separator: ",")
        case .keyless(let root, let identity, let issuer):
            text = "keyless \(identity) \(issuer ?? "-") \(root.fingerprint)"
        case .certificateAuthority(let roots, let intermediates, let identity, let issuer):
            let certificates = (roots + intermediates).map { SHA256Hasher.digest($0.der).hex }.joined(separator: ",")
            text = "ca \(certificates) \(identity?.description ?? "-") \(issuer ?? "-")"
        }
        text +=
            "\n" + requiredAnnotations.keys.sorted().map { "\($0)=\(requiredAnnotations[$0]!)" }.joined(separator: ",")
        text += "\n" + transparencyLogs.map { "\($0.logID.hexString) \($0.validity)" }.joined(separator: ",")
        text += "\n\(requireTransparencyLog)"
        return SHA256Hasher.digest(Data(text.utf8)).hex
    }

    /// Verifies one signature for the image `digest`.
    /// - Parameters:
    ///   - signature: the signature layer (payload blob and descriptor annotations).
    ///   - digest: the manifest digest being verified (the pinned digest of the image about to be used).
    ///   - now: the time certificates are judged at when no SET fixes the signing time (BYO-PKI only).
    /// - Returns: who signed, what, and when it was logged.
    /// - Throws: `VerificationError` naming the first check that failed.
    public func verify(_ signature: CosignSignature, digest: Digest, now: Date = Date()) throws(VerificationError)
        -> VerifiedSignature
    {
        let signatureBytes = try signature.signature()
        let signer: VerifiedSignature.Signer
        var logEntry: VerifiedSignature.LogEntry?

        switch policy {
        case .key(let keys):
            var match: PublicKey?
            for key in keys where try key.isValidSignature(signatureBytes, over: signature.payload) {
                match = key
                break
            }
            guard let key = match else {
                throw .badSignature(key: keys.count == 1 ? keys[0].description : "any of \(keys.count) keys")
            }
            if transparencyLogs.isEmpty {
                if requireTransparencyLog { throw .invalidSET(reason: "no trusted transparency log is configured") }
            } else if let bundle = try signature.bundle() {
                logEntry = try verifyBundle(bundle, logs: transparencyLogs)
                try bundle.requireEntry(payload: signature.payload, signature: signatureBytes, signer: key.spki)
            } else if requireTransparencyLog {
                throw .invalidSET(reason: "signature has no Rekor bundle")
            }
            signer = .key(key)

        case .keyless(let root, let identity, let issuer):
            guard let certificate = try signature.certificate() else {
                throw .untrustedCertificate(reason: "keyless policy but the signature carries no certificate")
            }
            guard let bundle = try signature.bundle() else {
                throw .invalidSET(reason: "keyless signature has no Rekor bundle")
            }
            let entry = try verifyBundle(bundle, logs: root.transparencyLogs + transparencyLogs)
            let chain = try Self.verifyChain(
                certificate, root: root, extra: signature.chain(), at: bundle.integratedDate)
            guard certificate.permitsCodeSigning(allowAbsent: false) else {
                throw .untrustedCertificate(reason: "certificate lacks the code-signing extended key usage")
            }
            try Self.requireSCT(certificate, chain: chain, logs: root.certificateTransparencyLogs)
            let matched = try Self.requireIdentity(certificate, identity: identity, issuer: issuer)
            try certificate.publicKey.verify(signature: signatureBytes, over: signature.payload)
            try bundle.requireEntry(payload: signature.payload, signature: signatureBytes, signer: certificate.der)
            logEntry = entry
            signer = .certificate(identity: matched, issuer: certificate.oidcIssuer, certificate: certificate)

        case .certificateAuthority(let roots, let intermediates, let identity, let issuer):
            guard let certificate = try signature.certificate() else {
                throw .untrustedCertificate(reason: "certificate policy but the signature carries no certificate")
            }
            var bundle: RekorBundle?
            if !transparencyLogs.isEmpty, let found = try signature.bundle() {
                logEntry = try verifyBundle(found, logs: transparencyLogs)
                bundle = found
            } else if requireTransparencyLog {
                throw .invalidSET(reason: "signature has no Rekor bundle verifiable with the configured logs")
            }
            let matched = try Self.requireAuthorityCertificate(
                certificate, roots: roots, intermediates: intermediates + (try signature.chain()),
                at: logEntry?.integratedTime ?? now, identity: identity, issuer: issuer)
            try certificate.publicKey.verify(signature: signatureBytes, over: signature.payload)
            try bundle?.requireEntry(payload: signature.payload, signature: signatureBytes, signer: certificate.der)
            signer = .certificate(identity: matched, issuer: certificate.oidcIssuer, certificate: certificate)
        }

        let payload = try SimpleSigningPayload(parsing: signature.payload)
        try payload.requireDigest(digest)
        try payload.requireAnnotations(requiredAnnotations)
        var verified = VerifiedSignature(
            signer: signer, digest: digest, dockerReference: payload.dockerReference, annotations: payload.optional,
            logEntry: logEntry)
        verified.signingTimes = logEntry?.integratedTime.map { [$0] } ?? []
        return verified
    }

    /// Verifies every signature and returns those that pass, in order.
    /// - Throws: `noValidSignature` with each signature's reason when none passes (or there are none).
    public func verify(_ signatures: [CosignSignature], digest: Digest, now: Date = Date()) throws(VerificationError)
        -> [VerifiedSignature]
    {
        var verified: [VerifiedSignature] = []
        var failures: [VerificationError] = []
        for signature in signatures {
            do {
                verified.append(try verify(signature, digest: digest, now: now))
            } catch {
                failures.append(error)
            }
        }
        guard !verified.isEmpty else { throw .noValidSignature(failures) }
        return verified
    }

    // MARK: - Steps

    func verifyBundle(_ bundle: RekorBundle, logs: [TrustedRoot.Log]) throws(VerificationError)
        -> VerifiedSignature.LogEntry
    {
        let log = try bundle.verifySET(logs: logs)
        return VerifiedSignature.LogEntry(
            logID: log.logID.hexString, logIndex: bundle.logIndex, integratedTime: bundle.integratedDate)
    }

    /// Chains `certificate` to a CA of `root` that was valid at `time`. Intermediates come from the CA's own chain
    /// and, as untrusted candidates only, from the signature's chain annotation.
    static func verifyChain(_ certificate: Certificate, root: TrustedRoot, extra: [Certificate], at time: Date)
        throws(VerificationError) -> [Certificate]
    {
        let authorities = root.certificateAuthorities.filter { $0.validity.contains(time) && !$0.chain.isEmpty }
        guard !authorities.isEmpty else {
            throw .untrustedCertificate(reason: "no certificate authority of the trusted root was valid at \(time)")
        }
        var failure: VerificationError?
        for authority in authorities {
            do {
                return try certificate.verifyChain(
                    roots: [authority.chain.last!], intermediates: authority.chain.dropLast() + extra, at: time)
            } catch {
                // An expiry is the more useful report: the chain was right, the time was not.
                if case .certificateExpired = error { failure = error } else if failure == nil { failure = error }
            }
        }
        throw failure!
    }

    /// Requires one embedded SCT from a CT log of the trusted root, as cosign does for Fulcio certificates. A
    /// trusted root that lists no CT logs opts out (as a BYO trusted root without CT may).
    static func requireSCT(_ certificate: Certificate, chain: [Certificate], logs: [TrustedRoot.Log])
        throws(VerificationError)
    {
        guard !logs.isEmpty else { return }
        guard chain.count >= 2 else { throw .invalidSCT(reason: "the certificate's issuer is unknown") }
        guard try certificate.validEmbeddedSCTCount(issuer: chain[1], logs: logs) >= 1 else {
            let reason =
                try certificate.embeddedSCTs().isEmpty
                ? "certificate embeds no SCT" : "no embedded SCT verifies with a trusted CT log"
            throw .invalidSCT(reason: reason)
        }
    }

    /// Checks a certificate against a bring-your-own PKI at `time`: chain, code-signing use (Go accepts a leaf
    /// without extended key usage), then identity and issuer when the policy names them. Returns who signed.
    static func requireAuthorityCertificate(
        _ certificate: Certificate, roots: [Certificate], intermediates: [Certificate], at time: Date,
        identity: Identity?, issuer: String?
    ) throws(VerificationError) -> String {
        _ = try certificate.verifyChain(roots: roots, intermediates: intermediates, at: time)
        guard certificate.permitsCodeSigning(allowAbsent: true) else {
            throw .untrustedCertificate(reason: "certificate's extended key usage excludes code signing")
        }
        if let identity { return try requireIdentity(certificate, identity: identity, issuer: issuer) }
        if let issuer, certificate.oidcIssuer != issuer {
            throw .issuerMismatch(expected: issuer, actual: certificate.oidcIssuer)
        }
        return certificate.alternativeNames.first?.value ?? certificate.subject
    }

    /// Checks the SAN identity and OIDC issuer; returns the SAN that matched.
    static func requireIdentity(_ certificate: Certificate, identity: Identity, issuer: String?)
        throws(VerificationError) -> String
    {
        let names = certificate.alternativeNames.map(\.value)
        guard let matched = try identity.firstMatch(in: names) else {
            throw .identityMismatch(expected: identity.description, actual: names)
        }
        if let issuer, certificate.oidcIssuer != issuer {
            throw .issuerMismatch(expected: issuer, actual: certificate.oidcIssuer)
        }
        return matched
    }
}
