import ContentHash
import Foundation
import OCI

extension CosignVerifier {
    /// Verifies a Sigstore bundle whose DSSE envelope holds an in-toto statement about the image `digest` (cosign
    /// v3 signatures and attestations, found through the referrers API).
    ///
    /// Checks, in order: the Rekor entry's SET and, for v0.2+ bundles, its inclusion proof and signed checkpoint, with
    /// the policy's logs; for certificates, the chain at the entry's integrated time, code-signing EKU, SCT, identity
    /// and issuer; the envelope signature over the DSSE pre-authentication encoding; that the logged `dsse` entry
    /// records this payload, signature and signer; that a statement subject is `digest`.
    ///
    /// Required annotations cannot be satisfied by a bundle (it has no simple-signing `optional` map), so a
    /// verifier that requires any refuses every bundle.
    /// - Throws: `VerificationError` naming the first check that failed.
    public func verify(bundle: SigstoreBundle, digest: Digest, now: Date = Date()) throws(VerificationError)
        -> VerifiedSignature
    {
        let envelope = bundle.envelope
        let message = envelope.preAuthenticationEncoding
        let entry = bundle.transparencyLogEntries.first { $0.rekorBundle != nil }
        let signer: VerifiedSignature.Signer
        let signatureBytes: Data
        let signerDER: Data
        var logEntry: VerifiedSignature.LogEntry?

        switch policy {
        case .key(let keys):
            var found: (PublicKey, Data)?
            search: for key in keys {
                for signature in envelope.signatures where try key.isValidSignature(signature, over: message) {
                    found = (key, signature)
                    break search
                }
            }
            guard let (key, signature) = found else {
                throw .badSignature(key: keys.count == 1 ? keys[0].description : "any of \(keys.count) keys")
            }
            if !transparencyLogs.isEmpty, let entry {
                logEntry = try verifyLogEntry(
                    entry, logs: transparencyLogs, requireProof: bundle.requiresInclusionProof)
            } else if requireTransparencyLog {
                throw .invalidSET(reason: "bundle has no transparency log entry verifiable with the configured logs")
            }
            signer = .key(key)
            signatureBytes = signature
            signerDER = key.spki

        case .keyless(let root, let identity, let issuer):
            guard let certificate = bundle.certificate else {
                throw .untrustedCertificate(reason: "keyless policy but the bundle carries no certificate")
            }
            guard let entry else { throw .invalidSET(reason: "bundle has no transparency log entry with a SET") }
            let verifiedEntry = try verifyLogEntry(
                entry, logs: root.transparencyLogs + transparencyLogs, requireProof: bundle.requiresInclusionProof)
            let chain = try Self.verifyChain(
                certificate, root: root, extra: bundle.chain, at: verifiedEntry.integratedTime)
            guard certificate.permitsCodeSigning(allowAbsent: false) else {
                throw .untrustedCertificate(reason: "certificate lacks the code-signing extended key usage")
            }
            try Self.requireSCT(certificate, chain: chain, logs: root.certificateTransparencyLogs)
            let matched = try Self.requireIdentity(certificate, identity: identity, issuer: issuer)
            signatureBytes = try Self.envelopeSignature(envelope, message: message, key: certificate.publicKey)
            logEntry = verifiedEntry
            signer = .certificate(identity: matched, issuer: certificate.oidcIssuer, certificate: certificate)
            signerDER = certificate.der

        case .certificateAuthority(let roots, let intermediates, let identity, let issuer):
            guard let certificate = bundle.certificate else {
                throw .untrustedCertificate(reason: "certificate policy but the bundle carries no certificate")
            }
            if !transparencyLogs.isEmpty, let entry {
                logEntry = try verifyLogEntry(
                    entry, logs: transparencyLogs, requireProof: bundle.requiresInclusionProof)
            } else if requireTransparencyLog {
                throw .invalidSET(reason: "bundle has no transparency log entry verifiable with the configured logs")
            }
            let matched = try Self.requireAuthorityCertificate(
                certificate, roots: roots, intermediates: intermediates + bundle.chain,
                at: logEntry?.integratedTime ?? now, identity: identity, issuer: issuer)
            signatureBytes = try Self.envelopeSignature(envelope, message: message, key: certificate.publicKey)
            signer = .certificate(identity: matched, issuer: certificate.oidcIssuer, certificate: certificate)
            signerDER = certificate.der
        }

        if logEntry != nil, let entry {
            try entry.requireDSSEEntry(payload: envelope.payload, signature: signatureBytes, signer: signerDER)
        }
        guard envelope.payloadType == DSSEEnvelope.inTotoPayloadType else {
            throw .invalidAttestation(reason: "payload type \(envelope.payloadType)")
        }
        let statement = try InTotoStatement(parsing: envelope.payload)
        guard statement.subjects.contains(where: { $0.digest["sha256"] == digest.hex }) else {
            let named = statement.subjects.first?.digest["sha256"].map { "sha256:" + $0 } ?? "no sha256 subject"
            throw .digestMismatch(payload: named, expected: digest)
        }
        if let key = requiredAnnotations.keys.sorted().first { throw .missingAnnotation(key: key) }
        var verified = VerifiedSignature(
            signer: signer, digest: digest, dockerReference: statement.subjects.first?.name ?? "", annotations: [:],
            logEntry: logEntry)
        verified.predicateType = statement.predicateType
        return verified
    }

    /// The SET of `entry` with the log among `logs` it names, and its inclusion proof with checkpoint (required when
    /// `requireProof`, else checked when present).
    private func verifyLogEntry(_ entry: TransparencyLogEntry, logs: [TrustedRoot.Log], requireProof: Bool)
        throws(VerificationError) -> VerifiedSignature.LogEntry
    {
        guard let promise = entry.rekorBundle else { throw .invalidSET(reason: "entry has no SET") }
        let verified = try verifyBundle(promise, logs: logs)
        if let proof = entry.inclusionProof {
            if requireProof && proof.checkpoint == nil {
                throw .invalidSET(reason: "inclusion proof has no signed checkpoint")
            }
            // verifyBundle found the log, so this lookup succeeds.
            if let log = logs.first(where: { $0.logID == entry.logID }) { try entry.verifyInclusionProof(log: log) }
        } else if requireProof {
            throw .invalidSET(reason: "entry has no inclusion proof")
        }
        return verified
    }

    /// The envelope signature that verifies with `key` over the pre-authentication encoding.
    private static func envelopeSignature(_ envelope: DSSEEnvelope, message: Data, key: PublicKey)
        throws(VerificationError) -> Data
    {
        for signature in envelope.signatures where try key.isValidSignature(signature, over: message) {
            return signature
        }
        throw .badSignature(key: key.description)
    }
}

extension TransparencyLogEntry {
    /// Checks that this `dsse` entry logs the envelope at hand: SHA-256 of `payload`, and `signature` made by
    /// `signer` (certificate DER or key SPKI) among its signatures. The envelope hash is not recomputed: Rekor
    /// hashes its own canonical re-serialisation of the envelope.
    /// - Throws: `VerificationError.invalidSET`.
    func requireDSSEEntry(payload: Data, signature: Data, signer: Data) throws(VerificationError) {
        struct Body: Decodable {
            struct Spec: Decodable {
                struct Hash: Decodable {
                    let algorithm: String
                    let value: String
                }
                struct Signature: Decodable {
                    let signature: String
                    let verifier: String
                }
                let payloadHash: Hash
                let signatures: [Signature]
            }
            let apiVersion: String
            let kind: String
            let spec: Spec
        }
        guard kind == "dsse", version == "0.0.1" else {
            throw .invalidSET(reason: "unsupported Rekor entry kind \(kind) \(version)")
        }
        let body: Body
        do {
            body = try JSONDecoder().decode(Body.self, from: canonicalizedBody)
        } catch {
            throw .invalidSET(reason: "entry body is not a dsse entry: \(error)")
        }
        guard body.kind == kind, body.apiVersion == version else {
            throw .invalidSET(reason: "entry body kind \(body.kind) \(body.apiVersion) disagrees with the bundle")
        }
        guard body.spec.payloadHash.algorithm == "sha256",
            body.spec.payloadHash.value.lowercased() == SHA256Hasher.digest(payload).hex
        else { throw .invalidSET(reason: "entry hashes another payload") }
        for recorded in body.spec.signatures {
            guard (try? decodeBase64(recorded.signature, what: "entry signature")) == signature,
                let pem = try? decodeBase64(recorded.verifier, what: "entry verifier"),
                let block = try? PEMBlock.parse(String(decoding: pem, as: UTF8.self), what: "entry verifier").first
            else { continue }
            let der = block.label == "PUBLIC KEY" ? (try? PublicKey(spki: block.der).spki) : block.der
            if der == signer { return }
        }
        throw .invalidSET(reason: "entry records another signature or signer")
    }
}
