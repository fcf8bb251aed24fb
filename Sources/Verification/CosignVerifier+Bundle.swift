import ContentHash
import Foundation
import OCI

extension CosignVerifier {
    /// Verifies a Sigstore bundle about an image: its DSSE envelope must hold an in-toto statement whose subject is
    /// the manifest `digest` (cosign v3 signatures and attestations, found through the referrers API).
    /// - Throws: `VerificationError` naming the first check that failed.
    public func verify(bundle: SigstoreBundle, digest: Digest, now: Date = Date()) throws(VerificationError)
        -> VerifiedSignature
    {
        guard bundle.envelope != nil else {
            throw .invalidAttestation(
                reason: "an image signature bundle holds a DSSE envelope, not a message signature")
        }
        return try verify(bundle: bundle, artifact: digest, now: now)
    }

    /// Verifies a Sigstore bundle for an artifact known by its SHA-256 `artifact` digest (and, for Ed25519 message
    /// signatures, its `bytes`), as `cosign verify-blob` and the sigstore-conformance suite do.
    ///
    /// Checks, in order (so that each broken input fails for its own reason):
    /// 1. keyless: the signing time, from RFC 3161 timestamps by the trusted root's timestamp authorities (in their
    ///    validity windows) and Rekor v1 integrated times under a valid SET; at least one is required;
    /// 2. keyless: at each such time, the certificate chains to a CA of the trusted root that was valid then, and
    ///    the certificate itself was valid; code-signing use; an SCT from a trusted CT log; identity and issuer;
    /// 3. the transparency-log entries from trusted logs: each entry's inclusion proof and signed checkpoint (Rekor
    ///    v2: origin and key of the log) and SET where present, the log's key valid at the signing times, and the
    ///    entry recording exactly this signature, signer and content; keyless needs one such entry;
    /// 4. the signature over the content (DSSE pre-authentication encoding, or the artifact digest);
    /// 5. the content is about the artifact: the message digest, or an in-toto subject; required annotations.
    /// - Throws: `VerificationError` naming the first check that failed.
    public func verify(bundle: SigstoreBundle, artifact: Digest, bytes: Data? = nil, now: Date = Date())
        throws(VerificationError) -> VerifiedSignature
    {
        let artifactDigest = Data(hex: artifact.hex)!
        let signer: VerifiedSignature.Signer
        var certificateKey: PublicKey?
        var times: [Date] = []
        var logEntries: [VerifiedSignature.LogEntry] = []

        switch policy {
        case .key(let keys):
            var found: PublicKey?
            for key in keys where try Self.contentVerifies(bundle, key: key, artifact: artifactDigest, bytes: bytes) {
                found = key
                break
            }
            guard let match = found else {
                throw .badSignature(key: keys.count == 1 ? keys[0].description : "any of \(keys.count) keys")
            }
            signer = .key(match)
            if !transparencyLogs.isEmpty {
                logEntries = try Self.verifyLogEntries(
                    bundle, logs: transparencyLogs, signer: bundle.certificate?.der ?? match.spki,
                    artifact: artifactDigest, times: [])
            }
            if requireTransparencyLog && logEntries.isEmpty {
                throw .invalidSET(reason: "bundle has no transparency log entry verifiable with the configured logs")
            }

        case .keyless(let root, let identity, let issuer):
            guard let certificate = bundle.certificate else {
                throw .untrustedCertificate(reason: "keyless policy but the bundle carries no certificate")
            }
            let logs = root.transparencyLogs + transparencyLogs
            times = try Self.signingTimes(bundle, root: root, logs: logs)
            var chain: [Certificate] = []
            for time in times {
                chain = try Self.verifyChain(certificate, root: root, extra: bundle.chain, at: time)
            }
            guard certificate.permitsCodeSigning(allowAbsent: false) else {
                throw .untrustedCertificate(reason: "certificate lacks the code-signing extended key usage")
            }
            try Self.requireSCT(certificate, chain: chain, logs: root.certificateTransparencyLogs)
            let matched = try Self.requireIdentity(certificate, identity: identity, issuer: issuer)
            logEntries = try Self.verifyLogEntries(
                bundle, logs: logs, signer: certificate.der, artifact: artifactDigest, times: times)
            guard !logEntries.isEmpty else {
                throw .invalidInclusionProof(reason: "bundle has no entry from a trusted transparency log")
            }
            certificateKey = certificate.publicKey
            signer = .certificate(identity: matched, issuer: certificate.oidcIssuer, certificate: certificate)

        case .certificateAuthority(let roots, let intermediates, let identity, let issuer):
            guard let certificate = bundle.certificate else {
                throw .untrustedCertificate(reason: "certificate policy but the bundle carries no certificate")
            }
            if !transparencyLogs.isEmpty {
                logEntries = try Self.verifyLogEntries(
                    bundle, logs: transparencyLogs, signer: certificate.der, artifact: artifactDigest, times: [])
            }
            if requireTransparencyLog && logEntries.isEmpty {
                throw .invalidSET(reason: "bundle has no transparency log entry verifiable with the configured logs")
            }
            times = logEntries.compactMap(\.integratedTime)
            var matched = ""
            for time in times.isEmpty ? [now] : times {
                matched = try Self.requireAuthorityCertificate(
                    certificate, roots: roots, intermediates: intermediates + bundle.chain, at: time,
                    identity: identity, issuer: issuer)
            }
            certificateKey = certificate.publicKey
            signer = .certificate(identity: matched, issuer: certificate.oidcIssuer, certificate: certificate)
        }

        // A key policy found its key by this very check.
        if let certificateKey {
            guard try Self.contentVerifies(bundle, key: certificateKey, artifact: artifactDigest, bytes: bytes) else {
                throw .badSignature(key: certificateKey.description)
            }
        }
        let subject = try Self.requireSubject(bundle, artifact: artifact, annotations: requiredAnnotations)
        var verified = VerifiedSignature(
            signer: signer, digest: artifact, dockerReference: subject.name, annotations: subject.annotations,
            logEntry: logEntries.first)
        verified.predicateType = subject.predicateType
        verified.signingTimes = times.sorted()
        return verified
    }

    // MARK: - Steps

    /// Whether the bundle's one signature verifies with `key` over its content.
    static func contentVerifies(_ bundle: SigstoreBundle, key: PublicKey, artifact: Data, bytes: Data?)
        throws(VerificationError) -> Bool
    {
        switch bundle.content {
        case .envelope(let envelope):
            return try key.isValidSignature(
                envelope.signatures[0], over: envelope.preAuthenticationEncoding, hash: key.naturalHash)
        case .messageSignature(let message):
            if let bytes, key.algorithm == .ed25519 { return try key.isValidSignature(message.signature, over: bytes) }
            return try key.isValidSignature(message.signature, overSHA256: artifact)
        }
    }

    /// The verified times of signing (step 1).
    static func signingTimes(_ bundle: SigstoreBundle, root: TrustedRoot, logs: [TrustedRoot.Log])
        throws(VerificationError) -> [Date]
    {
        var times: [Date] = []
        var reasons: [String] = []
        for der in bundle.timestamps {
            do {
                let response = try TimestampResponse(der: der)
                times.append(
                    try response.verify(signature: bundle.signature, authorities: root.timestampAuthorities).time)
            } catch {
                reasons.append(error.description)
            }
        }
        for entry in bundle.transparencyLogEntries where !entry.isRekorV2 {
            guard let promise = entry.rekorBundle else { continue }
            do {
                try promise.verifySET(logs: logs)
                times.append(promise.integratedDate)
            } catch {
                reasons.append(error.description)
            }
        }
        guard !times.isEmpty else { throw .noVerifiedTime(reasons: reasons) }
        return times
    }

    /// The entries from trusted logs, each fully verified (step 3); entries of other logs are skipped.
    static func verifyLogEntries(
        _ bundle: SigstoreBundle, logs: [TrustedRoot.Log], signer: Data, artifact: Data, times: [Date]
    ) throws(VerificationError) -> [VerifiedSignature.LogEntry] {
        var verified: [VerifiedSignature.LogEntry] = []
        for entry in bundle.transparencyLogEntries {
            guard let log = logs.first(where: { $0.logID == entry.logID }) else { continue }
            if entry.isRekorV2 && entry.inclusionProof == nil {
                throw .invalidInclusionProof(reason: "a Rekor v2 entry needs an inclusion proof")
            }
            if entry.inclusionProof != nil { try entry.verifyInclusionProof(log: log) }
            var integrated: Date?
            if let promise = entry.rekorBundle, !entry.isRekorV2 {
                try promise.verifySET(logs: [log])
                integrated = promise.integratedDate
            } else if let late = times.first(where: { !log.validity.contains($0) }) {
                throw .invalidInclusionProof(
                    reason: "log \(log.origin) key was not valid at \(late.formatted(.iso8601)) \(log.validity)")
            }
            try entry.requireRecords(bundle, signer: signer, artifact: artifact)
            verified.append(
                VerifiedSignature.LogEntry(
                    logID: entry.logID.hexString, logIndex: entry.logIndex, integratedTime: integrated))
        }
        return verified
    }

    /// Step 5: what was signed is about `artifact`. Returns the in-toto subject's name, annotations and the
    /// statement's predicate type (none for a message signature).
    static func requireSubject(_ bundle: SigstoreBundle, artifact: Digest, annotations required: [String: String])
        throws(VerificationError) -> (name: String, annotations: [String: JSONValue], predicateType: String?)
    {
        switch bundle.content {
        case .messageSignature(let message):
            if let digest = message.digest {
                guard message.digestAlgorithm == "SHA2_256", digest == Data(hex: artifact.hex) else {
                    throw .digestMismatch(
                        payload: "\(message.digestAlgorithm ?? "?"):\(digest.hexString)", expected: artifact)
                }
            }
            if let key = required.keys.sorted().first { throw .missingAnnotation(key: key) }
            return ("", [:], nil)
        case .envelope(let envelope):
            guard envelope.payloadType == DSSEEnvelope.inTotoPayloadType else {
                throw .invalidAttestation(reason: "payload type \(envelope.payloadType)")
            }
            let statement = try InTotoStatement(parsing: envelope.payload)
            guard let subject = statement.subject(sha256: artifact.hex) else {
                let named = statement.subjects.first?.digest["sha256"].map { "sha256:" + $0 } ?? "no sha256 subject"
                throw .digestMismatch(payload: named, expected: artifact)
            }
            for key in required.keys.sorted() where subject.annotations[key] != .string(required[key]!) {
                throw .missingAnnotation(key: key)
            }
            return (subject.name, subject.annotations, statement.predicateType)
        }
    }
}
