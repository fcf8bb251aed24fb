import ContentHash
import Foundation
import OCI
import Testing
import Verification

@Suite struct SigstoreBundleTests {
    static let digest = try! Digest(parsing: "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4")
    static let identity = "cody@soyland.com"
    static let issuer = "https://github.com/login/oauth"

    func json() throws -> [String: Any] {
        let data = try Fixtures.data("cosign-bundle-v03/oci-attestation.sigstore.json")
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func bundle(_ edit: (inout [String: Any]) throws -> Void = { _ in }) throws -> SigstoreBundle {
        var object = try json()
        try edit(&object)
        return try SigstoreBundle(json: JSONSerialization.data(withJSONObject: object))
    }

    func verifier(root: TrustedRoot? = nil, identity: String = identity) throws -> CosignVerifier {
        CosignVerifier(
            policy: .keyless(
                trustedRoot: try root ?? TrustedRoot.publicGood(), identity: .exact(identity), issuer: Self.issuer))
    }

    /// Edits `verificationMaterial.tlogEntries[0]`.
    func editEntry(_ object: inout [String: Any], _ edit: (inout [String: Any]) -> Void) {
        var material = object["verificationMaterial"] as! [String: Any]
        var entries = material["tlogEntries"] as! [[String: Any]]
        edit(&entries[0])
        material["tlogEntries"] = entries
        object["verificationMaterial"] = material
    }

    @Test func bundleVerifies() throws {
        let parsed = try bundle()
        #expect(parsed.mediaType == "application/vnd.dev.sigstore.bundle.v0.3+json")
        #expect(parsed.certificate?.oidcIssuer == Self.issuer)  // from the UTF8String extension .1.8
        for root in [
            try TrustedRoot.publicGood(),
            try TrustedRoot(json: Fixtures.data("cosign-bundle-v03/trusted_root_pgi.json")),
        ] {
            let verified = try verifier(root: root).verify(bundle: parsed, digest: Self.digest)
            #expect(verified.predicateType == "https://cosign.sigstore.dev/attestation/v1")
            #expect(verified.logEntry?.integratedTime == Date(timeIntervalSince1970: 1_740_770_291))
            #expect(verified.logEntry?.logIndex == 175_508_996)
            #expect(verified.dockerReference == "127.0.0.1:60943/repo")
            #expect(verified.signer.description == "\(Self.identity) (issuer \(Self.issuer))")
        }
    }

    @Test func preAuthenticationEncoding() {
        // The DSSE specification's example.
        let envelope = DSSEEnvelope(
            payload: Data("hello world".utf8), payloadType: "http://example.com/HelloWorld", signatures: [])
        #expect(
            envelope.preAuthenticationEncoding == Data("DSSEv1 29 http://example.com/HelloWorld 11 hello world".utf8))
    }

    @Test func tamperedPayloadOrSignatureFails() throws {
        let parsed = try bundle()
        let payload = try #require(parsed.envelope).payload.flipping(at: 40)
        let tampered = try bundle { object in
            var envelope = object["dsseEnvelope"] as! [String: Any]
            envelope["payload"] = payload.base64EncodedString()
            object["dsseEnvelope"] = envelope
        }
        // The log entry, checked before the signature, records the original payload.
        expectError(.logEntryMismatch(reason: "entry hashes another payload")) {
            try verifier().verify(bundle: tampered, digest: Self.digest)
        }
        let signature = try #require(parsed.envelope).signatures[0].flipping(at: -4)
        let badSignature = try bundle { object in
            var envelope = object["dsseEnvelope"] as! [String: Any]
            envelope["signatures"] = [["sig": signature.base64EncodedString()]]
            object["dsseEnvelope"] = envelope
        }
        expectError(.logEntryMismatch(reason: "entry records another signature")) {
            try verifier().verify(bundle: badSignature, digest: Self.digest)
        }
    }

    @Test func wrongDigestIdentityOrAnnotationsFail() throws {
        let parsed = try bundle()
        let other = SHA256Hasher.digest(Data("other".utf8))
        expectError(.digestMismatch(payload: Self.digest.description, expected: other)) {
            try verifier().verify(bundle: parsed, digest: other)
        }
        expectError(.identityMismatch(expected: "x@y.z", actual: [Self.identity])) {
            try verifier(identity: "x@y.z").verify(bundle: parsed, digest: Self.digest)
        }
        let annotated = CosignVerifier(policy: try verifier().policy, requiredAnnotations: ["k": "v"])
        expectError(.missingAnnotation(key: "k")) { try annotated.verify(bundle: parsed, digest: Self.digest) }
    }

    @Test func tamperedLogEvidenceFails() throws {
        let set = try bundle { object in
            editEntry(&object) { entry in
                let promise = entry["inclusionPromise"] as! [String: Any]
                let bytes = Data(base64Encoded: promise["signedEntryTimestamp"] as! String)!.flipping(at: 12)
                entry["inclusionPromise"] = ["signedEntryTimestamp": bytes.base64EncodedString()]
            }
        }
        // The SET is the only source of time here: without it, the certificate cannot be judged.
        expectError(
            .noVerifiedTime(reasons: [
                "invalid Rekor signed entry timestamp: signature does not verify with log c0d23d6ad406973f key"
            ])
        ) { try verifier().verify(bundle: set, digest: Self.digest) }
        let proof = try bundle { object in
            editEntry(&object) { entry in
                var proof = entry["inclusionProof"] as! [String: Any]
                var hashes = proof["hashes"] as! [String]
                hashes[3] = Data(base64Encoded: hashes[3])!.flipping(at: 0).base64EncodedString()
                proof["hashes"] = hashes
                entry["inclusionProof"] = proof
            }
        }
        expectError(.invalidInclusionProof(reason: "inclusion proof does not lead to the root hash")) {
            try verifier().verify(bundle: proof, digest: Self.digest)
        }
        let checkpoint = try bundle { object in
            editEntry(&object) { entry in
                var proof = entry["inclusionProof"] as! [String: Any]
                var note = proof["checkpoint"] as! [String: Any]
                let text = note["envelope"] as! String
                note["envelope"] = text.replacingOccurrences(of: "53604735\n", with: "53604736\n")
                proof["checkpoint"] = note
                entry["inclusionProof"] = proof
            }
        }
        expectError(.invalidInclusionProof(reason: "checkpoint signature by the log does not verify")) {
            try verifier().verify(bundle: checkpoint, digest: Self.digest)
        }
        // From v0.2 on a bundle must prove inclusion, and a proof must come with its checkpoint.
        expectError(.malformed(what: "Sigstore bundle", reason: "a v0.3 bundle's log entry has no inclusion proof")) {
            try bundle { object in editEntry(&object) { entry in entry["inclusionProof"] = nil } }
        }
        expectError(.malformed(what: "inclusion proof", reason: "no checkpoint")) {
            try bundle { object in
                editEntry(&object) { entry in
                    var proof = entry["inclusionProof"] as! [String: Any]
                    proof["checkpoint"] = nil
                    entry["inclusionProof"] = proof
                }
            }
        }
        let noEntry = try bundle { object in
            var material = object["verificationMaterial"] as! [String: Any]
            material["tlogEntries"] = [Any]()
            object["verificationMaterial"] = material
        }
        expectError(.noVerifiedTime(reasons: [])) { try verifier().verify(bundle: noEntry, digest: Self.digest) }
    }

    @Test func expiredCertificateAtIntegratedTime() throws {
        // A SET re-signed by a test log at a later time: valid SET, but the certificate had expired by then.
        let parsed = try bundle()
        let entry = try #require(parsed.transparencyLogEntries.first)
        let fakeLog = try PrivateKey.generateP256()
        let late = try #require(entry.integratedTime) + 86_400
        let promise = RekorBundle(
            signedEntryTimestamp: Data(), body: entry.canonicalizedBodyBase64, integratedTime: late,
            logIndex: entry.logIndex, logID: fakeLog.publicKey.fingerprint)
        let set = try fakeLog.sign(promise.canonicalPayload)
        let resigned = try bundle { object in
            editEntry(&object) { entry in
                entry["integratedTime"] = String(late)
                entry["logId"] = ["keyId": TrustedRoot.Log(publicKey: fakeLog.publicKey).logID.base64EncodedString()]
                entry["inclusionPromise"] = ["signedEntryTimestamp": set.base64EncodedString()]
                entry["inclusionProof"] = nil
            }
            // A v0.1 bundle may carry the SET alone; the re-signed entry has no valid inclusion proof.
            object["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"
        }
        var root = try TrustedRoot.publicGood()
        root.transparencyLogs = [TrustedRoot.Log(publicKey: fakeLog.publicKey)]
        expectError(.certificateExpired(at: Date(timeIntervalSince1970: TimeInterval(late)))) {
            try verifier(root: root).verify(bundle: resigned, digest: Self.digest)
        }
    }

    @Test func refusesOtherDocuments() throws {
        #expect(throws: VerificationError.self) { try SigstoreBundle(json: Data("{}".utf8)) }
        #expect(throws: VerificationError.self) {
            try bundle { object in object["mediaType"] = "application/json" }
        }
        #expect(throws: VerificationError.self) { try bundle { object in object["dsseEnvelope"] = nil } }
    }
}
