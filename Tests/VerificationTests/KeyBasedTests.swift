import ContentHash
import Foundation
import OCI
import Testing
import Verification

@Suite struct KeyBasedTests {
    let verifier = CosignVerifier(policy: .key([try! Fixtures.key("cosign.pub")]))

    @Test func validVectorVerifies() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-valid")
        let verified = try verifier.verify(signature, digest: digest)
        #expect(verified.signer == .key(try Fixtures.key("cosign.pub")))
        #expect(verified.digest == digest)
        #expect(verified.dockerReference == "192.168.64.2:5000/cosign-signed-single-sample")
        #expect(verified.logEntry == nil)
    }

    @Test func withTagVectorAndRequiredAnnotations() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-valid-with-tag")
        let annotated = CosignVerifier(
            policy: verifier.policy, requiredAnnotations: ["creator": "containers/image 5.21.2-dev"])
        #expect(try annotated.verify(signature, digest: digest).annotations["creator"] != nil)

        let missing = CosignVerifier(policy: verifier.policy, requiredAnnotations: ["env": "prod"])
        expectError(.missingAnnotation(key: "env")) { try missing.verify(signature, digest: digest) }
        let wrongValue = CosignVerifier(policy: verifier.policy, requiredAnnotations: ["creator": "someone else"])
        expectError(.missingAnnotation(key: "creator")) { try wrongValue.verify(signature, digest: digest) }
        // The plain vector has `"optional":null`: every required annotation is missing.
        let (plain, plainDigest) = try Fixtures.vector("dir-img-cosign-valid")
        expectError(.missingAnnotation(key: "env")) { try missing.verify(plain, digest: plainDigest) }
    }

    @Test func tamperedPayloadFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-valid")
        // Byte 30 is inside the docker-reference; the JSON stays valid, only the signature breaks.
        let tampered = signature.with(payload: signature.payload.flipping(at: 30))
        expectError(.badSignature(key: try Fixtures.key("cosign.pub").description)) {
            try verifier.verify(tampered, digest: digest)
        }
    }

    @Test func tamperedSignatureFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-valid")
        let bytes = try signature.signature().flipping(at: -3)
        let tampered = signature.with(CosignSignature.signatureAnnotation, bytes.base64EncodedString())
        expectError(.badSignature(key: try Fixtures.key("cosign.pub").description)) {
            try verifier.verify(tampered, digest: digest)
        }
        let garbled = signature.with(CosignSignature.signatureAnnotation, "%%%")
        expectError(.malformed(what: "signature annotation", reason: "not valid base64")) {
            try verifier.verify(garbled, digest: digest)
        }
        expectError(
            .malformed(what: "signature layer", reason: "no \(CosignSignature.signatureAnnotation) annotation")
        ) {
            try verifier.verify(signature.with(CosignSignature.signatureAnnotation, nil), digest: digest)
        }
    }

    @Test func wrongKeyFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-valid")
        let other = CosignVerifier(policy: .key([try Fixtures.key("cosign2.pub")]))
        expectError(.badSignature(key: try Fixtures.key("cosign2.pub").description)) {
            try other.verify(signature, digest: digest)
        }
        // Any one of several keys is enough.
        let either = CosignVerifier(policy: .key([try Fixtures.key("cosign2.pub"), try Fixtures.key("cosign.pub")]))
        #expect(try either.verify(signature, digest: digest).signer == .key(try Fixtures.key("cosign.pub")))
    }

    @Test func payloadNamingAnotherDigestFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-valid")
        let other = SHA256Hasher.digest(Data("another manifest".utf8))
        expectError(.digestMismatch(payload: digest.description, expected: other)) {
            try verifier.verify(signature, digest: other)
        }
    }

    @Test func keyWithRekorBundle() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-key-rekor-valid")
        let key = try Fixtures.key("cosign2.pub")
        let logged = CosignVerifier(
            policy: .key([key]), transparencyLogs: [try Fixtures.rekorLog()], requireTransparencyLog: true)
        let verified = try logged.verify(signature, digest: digest)
        #expect(verified.logEntry?.integratedTime == Date(timeIntervalSince1970: 1_674_251_859))
        #expect(verified.logEntry?.logIndex == 11_608_800)
        #expect(verified.logEntry?.logID == (try Fixtures.key("rekor.pub")).fingerprint)

        // Without a known log the signature still verifies by key, but no log time is claimed.
        #expect(try CosignVerifier(policy: .key([key])).verify(signature, digest: digest).logEntry == nil)
        let strictNoLogs = CosignVerifier(policy: .key([key]), requireTransparencyLog: true)
        expectError(.invalidSET(reason: "no trusted transparency log is configured")) {
            try strictNoLogs.verify(signature, digest: digest)
        }
        let (unlogged, unloggedDigest) = try Fixtures.vector("dir-img-cosign-valid")
        let strictOtherKey = CosignVerifier(
            policy: .key([try Fixtures.key("cosign.pub")]), transparencyLogs: [try Fixtures.rekorLog()],
            requireTransparencyLog: true)
        expectError(.invalidSET(reason: "signature has no Rekor bundle")) {
            try strictOtherKey.verify(unlogged, digest: unloggedDigest)
        }
    }

    @Test func tamperedSETFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-key-rekor-valid")
        let logged = CosignVerifier(
            policy: .key([try Fixtures.key("cosign2.pub")]), transparencyLogs: [try Fixtures.rekorLog()])
        let bundle = try #require(try signature.bundle())
        let rewritten = bundleJSON(
            set: bundle.signedEntryTimestamp.flipping(at: -2), body: bundle.body,
            integratedTime: bundle.integratedTime, logIndex: bundle.logIndex, logID: bundle.logID)
        let error = capturedError {
            try logged.verify(signature.with(CosignSignature.bundleAnnotation, rewritten), digest: digest)
        }
        #expect(error == .invalidSET(reason: "signature does not verify with log c0d23d6ad406973f key"))

        // A SET for another time, index or log fails too.
        let shifted = bundleJSON(
            set: bundle.signedEntryTimestamp, body: bundle.body, integratedTime: bundle.integratedTime + 1,
            logIndex: bundle.logIndex, logID: bundle.logID)
        #expect(
            capturedError {
                try logged.verify(signature.with(CosignSignature.bundleAnnotation, shifted), digest: digest)
            }
                == .invalidSET(reason: "signature does not verify with log c0d23d6ad406973f key"))
        let otherLog = bundleJSON(
            set: bundle.signedEntryTimestamp, body: bundle.body, integratedTime: bundle.integratedTime,
            logIndex: bundle.logIndex, logID: String(repeating: "ab", count: 32))
        #expect(
            capturedError {
                try logged.verify(signature.with(CosignSignature.bundleAnnotation, otherLog), digest: digest)
            }
                == .invalidSET(reason: "no trusted transparency log has ID \(String(repeating: "ab", count: 32))"))
    }

    @Test func setForAnotherEntryFails() throws {
        // The keyless vector's SET is genuine, but it logs a different signature and certificate.
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-key-rekor-valid")
        let (keyless, _) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let swapped = signature.with(
            CosignSignature.bundleAnnotation, keyless.annotations[CosignSignature.bundleAnnotation])
        let logged = CosignVerifier(
            policy: .key([try Fixtures.key("cosign2.pub")]), transparencyLogs: [try Fixtures.rekorLog()])
        let error = capturedError { try logged.verify(swapped, digest: digest) }
        #expect(error == .logEntryMismatch(reason: "entry hashes another payload"))
    }

    @Test func signaturesFromASigManifest() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-valid")
        let layer = Descriptor(
            mediaType: SimpleSigningPayload.mediaType, digest: SHA256Hasher.digest(signature.payload),
            size: Int64(signature.payload.count), annotations: signature.annotations)
        let config = Descriptor(mediaType: "application/vnd.oci.image.config.v1+json", digest: digest, size: 2)
        let manifest = Manifest(config: config, layers: [layer])
        #expect(CosignSignature.signatureTag(for: digest) == "sha256-\(digest.hex).sig")
        let found = try CosignSignature.signatures(in: manifest) { _ in signature.payload }
        #expect(found == [signature])
        #expect(try verifier.verify(found, digest: digest).count == 1)
        // A registry serving other bytes than the manifest names is caught before any signature check.
        #expect(throws: VerificationError.self) {
            try CosignSignature.signatures(in: manifest) { _ in signature.payload.flipping(at: 30) }
        }
    }

    @Test func severalSignatures() throws {
        let (good, digest) = try Fixtures.vector("dir-img-cosign-valid")
        let bad = good.with(payload: good.payload.flipping(at: 30))
        #expect(try verifier.verify([bad, good], digest: digest).count == 1)
        let key = try Fixtures.key("cosign.pub").description
        expectError(.noValidSignature([.badSignature(key: key), .badSignature(key: key)])) {
            try verifier.verify([bad, bad], digest: digest)
        }
        expectError(.noValidSignature([])) { try verifier.verify([], digest: digest) }
    }
}

/// A `dev.sigstore.cosign/bundle` annotation in cosign's field order.
func bundleJSON(set: Data, body: String, integratedTime: Int64, logIndex: Int64, logID: String) -> String {
    #"{"SignedEntryTimestamp":"\#(set.base64EncodedString())","Payload":{"body":"\#(body)","#
        + #""integratedTime":\#(integratedTime),"logIndex":\#(logIndex),"logID":"\#(logID)"}}"#
}

@Suite struct SigningTests {
    @Test func signThenVerify() throws {
        let key = try PrivateKey.generateP256()
        let digest = SHA256Hasher.digest(Data("manifest".utf8))
        let signature = try CosignSignature.sign(
            digest: digest, reference: "registry.example/kernels", annotations: ["team": "gpu"], key: key)
        let verifier = CosignVerifier(policy: .key([key.publicKey]), requiredAnnotations: ["team": "gpu"])
        let verified = try verifier.verify(signature, digest: digest)
        #expect(verified.signer == .key(key.publicKey))
        #expect(verified.dockerReference == "registry.example/kernels")
        #expect(verified.signer.description == "key sha256:\(key.publicKey.fingerprint)")
        // The key is reloadable from its PEM form, as cosign.pub would be.
        #expect(try PublicKey(pem: key.publicKey.pem) == key.publicKey)
    }

    @Test func errorDescriptionsCarryEvidence() throws {
        let digest = SHA256Hasher.digest(Data("a".utf8))
        let error = VerificationError.noValidSignature([
            .digestMismatch(payload: "sha256:00", expected: digest), .missingAnnotation(key: "team"),
        ])
        #expect(
            error.description
                == "no valid signature: signed payload names sha256:00, not \(digest), the digest being verified; "
                + "required annotation 'team' is missing from the signed payload")
        #expect(VerificationError.noValidSignature([]).description == "no signatures found")
        #expect(
            VerificationError.certificateExpired(at: Date(timeIntervalSince1970: 0)).description
                == "certificate was not valid at 1970-01-01T00:00:00Z")
    }
}
