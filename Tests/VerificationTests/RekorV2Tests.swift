import ContentHash
import Foundation
import OCI
import Testing

@testable import Verification

/// Bundles in cosign v3's default shape (Rekor v2 entry, RFC 3161 timestamp) from the private instance under
/// `Fixtures/test-pki` (written by Tests/e2e/support/sigstore_pki.py: an implementation independent of this one).
@Suite struct RekorV2Tests {
    static let identity = "https://github.com/example/cache/.github/workflows/publish.yml@refs/heads/main"
    static let issuer = "https://token.actions.githubusercontent.com"

    static func root(_ edit: (inout [String: Any]) -> Void = { _ in }) throws -> TrustedRoot {
        var object = try #require(
            try JSONSerialization.jsonObject(with: Fixtures.data("test-pki/trusted_root.json")) as? [String: Any])
        edit(&object)
        return try TrustedRoot(json: JSONSerialization.data(withJSONObject: object))
    }

    static func bundle(_ name: String, _ edit: (inout [String: Any]) -> Void = { _ in }) throws -> SigstoreBundle {
        var object = try #require(
            try JSONSerialization.jsonObject(with: Fixtures.data("test-pki/\(name).sigstore.json")) as? [String: Any])
        edit(&object)
        return try SigstoreBundle(json: JSONSerialization.data(withJSONObject: object))
    }

    static var artifact: Digest { get throws { SHA256Hasher.digest(try Fixtures.data("test-pki/artifact")) } }

    static func verifier(_ root: TrustedRoot? = nil) throws -> CosignVerifier {
        CosignVerifier(
            policy: .keyless(trustedRoot: try root ?? Self.root(), identity: .exact(identity), issuer: issuer))
    }

    @Test(arguments: ["rekor2-message", "rekor2-dsse", "rekor1-dsse"])
    func verifies(name: String) throws {
        let parsed = try Self.bundle(name)
        let verified = try Self.verifier().verify(bundle: parsed, artifact: try Self.artifact)
        #expect(verified.signer.description == "\(Self.identity) (issuer \(Self.issuer))")
        #expect(verified.signingTimes.count == 1)
        if name.hasPrefix("rekor2") {
            // No integrated time: the time is the TSA's genTime, to the millisecond.
            #expect(verified.logEntry?.integratedTime == nil)
            let fraction = try #require(verified.signingTimes.first).timeIntervalSince1970.truncatingRemainder(
                dividingBy: 1)
            #expect(abs(fraction - 0.25) < 0.001)
        } else {
            #expect(verified.logEntry?.integratedTime == verified.signingTimes.first)
        }
    }

    @Test func rekorV2EntryNeedsATimestamp() throws {
        let parsed = try Self.bundle("rekor2-message") { object in
            var material = object["verificationMaterial"] as! [String: Any]
            material["timestampVerificationData"] = nil
            object["verificationMaterial"] = material
        }
        expectError(.noVerifiedTime(reasons: [])) {
            try Self.verifier().verify(bundle: parsed, artifact: try Self.artifact)
        }
    }

    @Test func timestampOutsideTheAuthorityWindowIsRefused() throws {
        let parsed = try Self.bundle("rekor2-message")
        let time = try TimestampResponse(der: parsed.timestamps[0]).generationTime
        var root = try Self.root()
        root.timestampAuthorities[0].validity.end = time.addingTimeInterval(-1)
        let error = capturedError { try Self.verifier(root).verify(bundle: parsed, artifact: try Self.artifact) }
        guard case .noVerifiedTime(let reasons) = error, let reason = reasons.first else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(reason.contains("is outside the authority's validity"))
        // The end is included.
        root.timestampAuthorities[0].validity.end = time
        _ = try Self.verifier(root).verify(bundle: parsed, artifact: try Self.artifact)
    }

    @Test func logKeyMustBeValidAtTheSigningTime() throws {
        let parsed = try Self.bundle("rekor2-message")
        var root = try Self.root()
        let index = try #require(root.transparencyLogs.firstIndex { $0.publicKey.algorithm == .ed25519 })
        root.transparencyLogs[index].validity.end = Date(timeIntervalSince1970: 1_000_000_000)
        let error = capturedError { try Self.verifier(root).verify(bundle: parsed, artifact: try Self.artifact) }
        guard case .invalidInclusionProof(let reason) = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(reason.contains("key was not valid at"))
    }

    @Test func logWithoutValidityStartIsAMalformedRoot() {
        #expect(throws: VerificationError.self) {
            try Self.root { object in
                var logs = object["tlogs"] as! [[String: Any]]
                var key = logs[0]["publicKey"] as! [String: Any]
                key["validFor"] = [String: Any]()
                logs[0]["publicKey"] = key
                object["tlogs"] = logs
            }
        }
    }

    @Test func rekorV2LogIDIsTheC2SPKeyID() throws {
        let root = try Self.root()
        let log = try #require(root.transparencyLogs.first { $0.publicKey.algorithm == .ed25519 })
        #expect(log.origin == "log2025-1.rekor.test.example")
        #expect(log.checkpointKeyID(name: log.origin) == log.logID)
        // For ECDSA keys the C2SP key ID is the Rekor v1 log ID, whatever the name.
        let ecdsa = try #require(root.transparencyLogs.first { $0.publicKey.algorithm == .ecdsaP256 })
        #expect(ecdsa.checkpointKeyID(name: "anything") == ecdsa.logID)
    }

    @Test func entryMustRecordThisSignature() throws {
        let swapped = try Self.bundle("rekor2-message") { object in
            var material = object["verificationMaterial"] as! [String: Any]
            let otherObject =
                try! JSONSerialization.jsonObject(with: Fixtures.data("test-pki/rekor2-dsse.sigstore.json"))
                as! [String: Any]
            material["tlogEntries"] = (otherObject["verificationMaterial"] as! [String: Any])["tlogEntries"]
            object["verificationMaterial"] = material
        }
        let error = capturedError { try Self.verifier().verify(bundle: swapped, artifact: try Self.artifact) }
        guard case .logEntryMismatch = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
    }

    @Test func statementMustNameTheArtifact() throws {
        let parsed = try Self.bundle("rekor2-dsse")
        let other = SHA256Hasher.digest(Data("other".utf8))
        let error = capturedError { try Self.verifier().verify(bundle: parsed, artifact: other) }
        guard case .digestMismatch(_, let expected) = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(expected == other)
    }

    @Test func messageSignatureNeedsTheRightKey() throws {
        let parsed = try Self.bundle("rekor2-message")
        let key = try PrivateKey.generateP256()
        expectError(.badSignature(key: key.publicKey.description)) {
            try CosignVerifier(policy: .key([key.publicKey])).verify(bundle: parsed, artifact: try Self.artifact)
        }
    }
}

/// RFC 3161 responses, made by the private TSA.
@Suite struct TimestampResponseTests {
    static func response() throws -> (TimestampResponse, SigstoreBundle) {
        let bundle = try RekorV2Tests.bundle("rekor2-message")
        return (try TimestampResponse(der: bundle.timestamps[0]), bundle)
    }

    @Test func verifiesOverTheSignature() throws {
        let (response, bundle) = try Self.response()
        #expect(response.imprintHash == .sha256)
        let root = try RekorV2Tests.root()
        let verified = try response.verify(signature: bundle.signature, authorities: root.timestampAuthorities)
        #expect(verified.time == response.generationTime)
        expectError(.invalidTimestamp(reason: "timestamp is over another signature")) {
            try response.verify(signature: bundle.signature.flipping(at: 3), authorities: root.timestampAuthorities)
        }
        expectError(.invalidTimestamp(reason: "the trusted root lists no timestamp authority")) {
            try response.verify(signature: bundle.signature, authorities: [])
        }
    }

    @Test func anotherAuthorityIsNotTrusted() throws {
        let (response, bundle) = try Self.response()
        let fulcio = try RekorV2Tests.root().certificateAuthorities
        let error = capturedError { try response.verify(signature: bundle.signature, authorities: fulcio) }
        guard case .invalidTimestamp(let reason) = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(reason.contains("not signed by this authority"))
    }

    @Test func malformedResponses() {
        expectError(.invalidTimestamp(reason: "not a DER TimeStampResp")) { try TimestampResponse(der: Data([0x30])) }
        expectError(.invalidTimestamp(reason: "not a DER TimeStampResp")) { try TimestampResponse(der: Data()) }
    }

    @Test func generalizedTime() {
        let base = Date(timeIntervalSince1970: 1_750_000_000)  // 2025-06-15T15:06:40Z
        #expect(TimestampResponse.generalizedTime("20250615150640Z") == base)
        #expect(TimestampResponse.generalizedTime("20250615150640.5Z") == base.addingTimeInterval(0.5))
        for bad in ["20250615150640", "2025061515064Z", "20251315150640Z", "20250615150640.Z", "2025061515064aZ"] {
            #expect(TimestampResponse.generalizedTime(bad) == nil, "\(bad)")
        }
    }
}
