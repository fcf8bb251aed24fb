import ContentHash
import Foundation
import OCI
import Testing
import Verification

@Suite struct KeylessTests {
    static let identity = "mitr@redhat.com"
    static let issuer = "https://github.com/login/oauth"

    func verifier(
        root: TrustedRoot? = nil, identity: CosignVerifier.Identity = .exact(identity), issuer: String? = issuer
    ) throws -> CosignVerifier {
        CosignVerifier(
            policy: .keyless(trustedRoot: try root ?? TrustedRoot.publicGood(), identity: identity, issuer: issuer))
    }

    @Test func fulcioVectorVerifiesWithPublicGoodRoot() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let verified = try verifier().verify(signature, digest: digest)
        guard case .certificate(let identity, let issuer, let certificate) = verified.signer else {
            Issue.record("signed by \(verified.signer)")
            return
        }
        #expect(identity == Self.identity)
        #expect(issuer == Self.issuer)
        #expect(certificate.alternativeNames == [.email(Self.identity)])
        #expect(verified.logEntry?.integratedTime == Date(timeIntervalSince1970: 1_674_247_893))
        #expect(verified.logEntry?.logIndex == 11_605_770)
        #expect(verified.dockerReference == "192.168.64.2:5000/cosign-signed/fulcio-rekor-1")
    }

    @Test func fulcioVectorVerifiesWithPEMRoots() throws {
        // The same trust from loose files: the Fulcio root PEM (intermediate from the chain annotation) + rekor.pub.
        let root = TrustedRoot(
            certificateAuthorities: [
                .init(chain: [try Certificate(pem: Fixtures.text("containers-image/fulcio_v1.crt.pem"))])
            ],
            transparencyLogs: [try Fixtures.rekorLog()])
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        _ = try verifier(root: root).verify(signature, digest: digest)
    }

    @Test func identityRegexpAndNoIssuer() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        _ = try verifier(identity: .regexp("@redhat\\.com$"), issuer: nil).verify(signature, digest: digest)
        // Unanchored, as Go's regexp.MatchString.
        _ = try verifier(identity: .regexp("mitr")).verify(signature, digest: digest)
        expectError(.identityMismatch(expected: "/^root@/", actual: [Self.identity])) {
            try verifier(identity: .regexp("^root@")).verify(signature, digest: digest)
        }
    }

    @Test func wrongIdentityFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        expectError(.identityMismatch(expected: "someone@redhat.com", actual: [Self.identity])) {
            try verifier(identity: .exact("someone@redhat.com")).verify(signature, digest: digest)
        }
    }

    @Test func wrongIssuerFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        expectError(.issuerMismatch(expected: "https://accounts.google.com", actual: Self.issuer)) {
            try verifier(issuer: "https://accounts.google.com").verify(signature, digest: digest)
        }
    }

    @Test func tamperedPayloadAndSignatureFail() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let certificate = try #require(try signature.certificate())
        let reason = VerificationError.badSignature(key: certificate.publicKey.description)
        expectError(reason) {
            try verifier().verify(signature.with(payload: signature.payload.flipping(at: 30)), digest: digest)
        }
        let sig = try signature.signature().flipping(at: -5).base64EncodedString()
        expectError(reason) {
            try verifier().verify(signature.with(CosignSignature.signatureAnnotation, sig), digest: digest)
        }
    }

    @Test func tamperedCertificateFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let certificate = try #require(try signature.certificate())
        // One byte of the CA's signature over the leaf (near the end of the DER).
        let tampered = certificate.der.flipping(at: -8)
        let pem =
            "-----BEGIN CERTIFICATE-----\n"
            + tampered.base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
            + "\n-----END CERTIFICATE-----\n"
        let error = capturedError {
            try verifier().verify(signature.with(CosignSignature.certificateAnnotation, pem), digest: digest)
        }
        guard case .untrustedCertificate(let reason) = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(reason.contains("signature failure"))
    }

    @Test func tamperedSETFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let bundle = try #require(try signature.bundle())
        let json = bundleJSON(
            set: bundle.signedEntryTimestamp.flipping(at: 10), body: bundle.body,
            integratedTime: bundle.integratedTime, logIndex: bundle.logIndex, logID: bundle.logID)
        expectError(.invalidSET(reason: "signature does not verify with log c0d23d6ad406973f key")) {
            try verifier().verify(signature.with(CosignSignature.bundleAnnotation, json), digest: digest)
        }
    }

    @Test func missingSETIsRefused() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        expectError(.invalidSET(reason: "keyless signature has no Rekor bundle")) {
            try verifier().verify(signature.with(CosignSignature.bundleAnnotation, nil), digest: digest)
        }
        expectError(.untrustedCertificate(reason: "keyless policy but the signature carries no certificate")) {
            try verifier().verify(signature.with(CosignSignature.certificateAnnotation, nil), digest: digest)
        }
    }

    @Test func wrongTrustedRootFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        // The right Rekor log but another CA (the BYO-PKI root): the chain does not verify.
        let otherCA = TrustedRoot(
            certificateAuthorities: [
                .init(chain: try Certificate.parseChain(pem: Fixtures.text("containers-image/pki_root_crts.pem")))
            ],
            transparencyLogs: [try Fixtures.rekorLog()])
        let error = capturedError { try verifier(root: otherCA).verify(signature, digest: digest) }
        guard case .untrustedCertificate = error else {
            Issue.record("got \(String(describing: error))")
            return
        }

        // The right CA but no Rekor log the SET could come from.
        var noLog = try TrustedRoot.publicGood()
        noLog.transparencyLogs = []
        let rekorID = try Fixtures.key("rekor.pub").fingerprint
        expectError(.invalidSET(reason: "no trusted transparency log has ID \(rekorID)")) {
            try verifier(root: noLog).verify(signature, digest: digest)
        }

        // The right CA, but only for a period that ended before the signature was logged.
        var stale = try TrustedRoot.publicGood()
        for index in stale.certificateAuthorities.indices {
            stale.certificateAuthorities[index].validity.end = Date(timeIntervalSince1970: 1_600_000_000)
        }
        let staleError = capturedError { try verifier(root: stale).verify(signature, digest: digest) }
        guard case .untrustedCertificate(let reason) = staleError else {
            Issue.record("got \(String(describing: staleError))")
            return
        }
        #expect(reason.hasPrefix("no certificate authority of the trusted root was valid"))
    }

    @Test func certificateExpiredAtIntegratedTime() throws {
        // Re-sign the entry with a test Rekor key at a later integratedTime: the SET is then valid, and the
        // 10-minute Fulcio certificate must be refused as expired at that moment.
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let bundle = try #require(try signature.bundle())
        let fakeRekor = try PrivateKey.generateP256()
        let log = TrustedRoot.Log(publicKey: fakeRekor.publicKey)
        var root = try TrustedRoot.publicGood()
        root.transparencyLogs = [log]

        func resigned(at time: Int64) throws -> CosignSignature {
            let entry = RekorBundle(
                signedEntryTimestamp: Data(), body: bundle.body, integratedTime: time, logIndex: bundle.logIndex,
                logID: fakeRekor.publicKey.fingerprint)
            let set = try fakeRekor.sign(entry.canonicalPayload)
            let json = bundleJSON(
                set: set, body: bundle.body, integratedTime: time, logIndex: bundle.logIndex,
                logID: fakeRekor.publicKey.fingerprint)
            return signature.with(CosignSignature.bundleAnnotation, json)
        }

        // Control: the same construction at the real time verifies.
        _ = try verifier(root: root).verify(resigned(at: bundle.integratedTime), digest: digest)
        let late = bundle.integratedTime + 3600
        expectError(.certificateExpired(at: Date(timeIntervalSince1970: TimeInterval(late)))) {
            try verifier(root: root).verify(try resigned(at: late), digest: digest)
        }
        let early = bundle.integratedTime - 3600
        expectError(.certificateExpired(at: Date(timeIntervalSince1970: TimeInterval(early)))) {
            try verifier(root: root).verify(try resigned(at: early), digest: digest)
        }
    }

    @Test func payloadNamingAnotherDigestFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let other = SHA256Hasher.digest(Data("x".utf8))
        expectError(.digestMismatch(payload: digest.description, expected: other)) {
            try verifier().verify(signature, digest: other)
        }
    }

    @Test func internalTestdataVerifies() throws {
        // containers/image's loose keyless files: cert, chain, signature, payload and bundle of one signature.
        let payload = try Fixtures.data("containers-image/internal-testdata/rekor-payload")
        let signature = CosignSignature(
            payload: payload,
            annotations: [
                CosignSignature.signatureAnnotation: try Fixtures.text("containers-image/internal-testdata/rekor-sig"),
                CosignSignature.certificateAnnotation: try Fixtures.text(
                    "containers-image/internal-testdata/rekor-cert"),
                CosignSignature.chainAnnotation: try Fixtures.text("containers-image/internal-testdata/fulcio-chain"),
                CosignSignature.bundleAnnotation: try Fixtures.text("containers-image/internal-testdata/rekor-set"),
            ])
        let digest = try Digest(parsing: "sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f")
        let verified = try verifier().verify(signature, digest: digest)
        #expect(verified.logEntry?.integratedTime == Date(timeIntervalSince1970: 1_670_870_899))

        // Its bundle is valid but belongs to another signature than the Jan 2023 vector's.
        let (other, otherDigest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let mixed = other.with(
            CosignSignature.bundleAnnotation, signature.annotations[CosignSignature.bundleAnnotation])
        let error = capturedError { try verifier().verify(mixed, digest: otherDigest) }
        // The SET's time (Dec 2022) is outside the Jan 2023 certificate's validity: refused before anything else.
        #expect(error == .certificateExpired(at: Date(timeIntervalSince1970: 1_670_870_899)))
    }

    @Test func keyPolicyIgnoresCertificates() throws {
        // A keyless signature does not verify under a key policy with an unrelated key.
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let key = try Fixtures.key("cosign.pub")
        expectError(.badSignature(key: key.description)) {
            try CosignVerifier(policy: .key([key])).verify(signature, digest: digest)
        }
    }
}

@Suite struct CertificateAuthorityTests {
    func verifier(identity: CosignVerifier.Identity? = .exact("qiwan@redhat.com")) throws -> CosignVerifier {
        CosignVerifier(
            policy: .certificateAuthority(
                roots: try Certificate.parseChain(pem: Fixtures.text("containers-image/pki_root_crts.pem")),
                intermediates: try Certificate.parseChain(
                    pem: Fixtures.text("containers-image/pki_intermediate_crts.pem")),
                identity: identity, issuer: nil))
    }

    let now = Date(timeIntervalSince1970: 1_800_000_000)  // 2027, inside the leaf's 2024–2052 validity

    @Test func pkiVectorVerifies() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-pki-valid")
        let verified = try verifier().verify(signature, digest: digest, now: now)
        guard case .certificate(let identity, let issuer, let certificate) = verified.signer else {
            Issue.record("signed by \(verified.signer)")
            return
        }
        #expect(identity == "qiwan@redhat.com")
        #expect(issuer == nil)
        #expect(certificate.publicKey.algorithm == .rsa(bits: 4096))
        #expect(certificate.alternativeNames == [.email("qiwan@redhat.com"), .dns("myhost.example.com")])
        // The DNS SAN is an identity too, as in cosign.
        _ = try verifier(identity: .exact("myhost.example.com")).verify(signature, digest: digest, now: now)
    }

    @Test func pkiVectorIsNotKeyless() throws {
        // A certificate without a Rekor entry never passes the keyless policy, whatever its CA.
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-pki-valid")
        let keyless = CosignVerifier(
            policy: .keyless(
                trustedRoot: try TrustedRoot.publicGood(), identity: .exact("qiwan@redhat.com"), issuer: nil))
        expectError(.invalidSET(reason: "keyless signature has no Rekor bundle")) {
            try keyless.verify(signature, digest: digest)
        }
        let strict = CosignVerifier(policy: try verifier().policy, requireTransparencyLog: true)
        expectError(.invalidSET(reason: "signature has no Rekor bundle verifiable with the configured logs")) {
            try strict.verify(signature, digest: digest, now: now)
        }
    }

    @Test func pkiFailures() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-pki-valid")
        expectError(.identityMismatch(expected: "x@y", actual: ["qiwan@redhat.com", "myhost.example.com"])) {
            try verifier(identity: .exact("x@y")).verify(signature, digest: digest, now: now)
        }
        let later = Date(timeIntervalSince1970: 2_900_000_000)  // 2061
        expectError(.certificateExpired(at: later)) { try verifier().verify(signature, digest: digest, now: later) }
        let fulcioRoot = CosignVerifier(
            policy: .certificateAuthority(
                roots: [try Certificate(pem: Fixtures.text("containers-image/fulcio_v1.crt.pem"))], intermediates: [],
                identity: nil, issuer: nil))
        let error = capturedError { try fulcioRoot.verify(signature, digest: digest, now: now) }
        guard case .untrustedCertificate = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        let sig = try signature.signature().flipping(at: 100).base64EncodedString()
        let certificate = try #require(try signature.certificate())
        expectError(.badSignature(key: certificate.publicKey.description)) {
            try verifier().verify(signature.with(CosignSignature.signatureAnnotation, sig), digest: digest, now: now)
        }
    }
}

@Suite struct SCTTests {
    func keyless(_ root: TrustedRoot) -> CosignVerifier {
        CosignVerifier(
            policy: .keyless(trustedRoot: root, identity: .exact(KeylessTests.identity), issuer: KeylessTests.issuer))
    }

    @Test func fulcioCertificateSCTVerifies() throws {
        let (signature, _) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        let leaf = try #require(try signature.certificate())
        let intermediate = try #require(try signature.chain().first)
        let logs = try TrustedRoot.publicGood().certificateTransparencyLogs
        let scts = try leaf.embeddedSCTs()
        #expect(scts.count == 1)
        #expect(scts[0].logID.base64EncodedString() == "3T0wasbHETJjGR4cmWc3AqJKXrjePK3/h4pygC8p7o4=")
        #expect(try leaf.validEmbeddedSCTCount(issuer: intermediate, logs: logs) == 1)
        // The issuer's key hash is part of what the log signed: another issuer does not verify.
        let root = try Certificate(pem: Fixtures.text("containers-image/fulcio_v1.crt.pem"))
        #expect(try leaf.validEmbeddedSCTCount(issuer: root, logs: logs) == 0)
        // No SCTs in a CA certificate.
        #expect(try root.embeddedSCTs().isEmpty)
    }

    @Test func untrustedCTLogFails() throws {
        let (signature, digest) = try Fixtures.vector("dir-img-cosign-fulcio-rekor-valid")
        var root = try TrustedRoot.publicGood()
        // The right log ID but another key: the SCT signature does not verify.
        root.certificateTransparencyLogs = root.certificateTransparencyLogs.map { log in
            TrustedRoot.Log(
                baseURL: log.baseURL, publicKey: try! PrivateKey.generateP256().publicKey, logID: log.logID,
                validity: log.validity)
        }
        expectError(.invalidSCT(reason: "no embedded SCT verifies with a trusted CT log")) {
            try keyless(root).verify(signature, digest: digest)
        }
        // The real 2022 CT log, but only trusted until before the SCT was issued.
        var expired = try TrustedRoot.publicGood()
        for index in expired.certificateTransparencyLogs.indices {
            expired.certificateTransparencyLogs[index].validity.end = Date(timeIntervalSince1970: 1_660_000_000)
        }
        expectError(.invalidSCT(reason: "no embedded SCT verifies with a trusted CT log")) {
            try keyless(expired).verify(signature, digest: digest)
        }
    }
}
