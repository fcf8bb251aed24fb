import ContentHash
import Foundation
import OCI
import Testing

@testable import Verification

/// What each bundle version allows, and the bundles mcvfs signs.
@Suite struct BundleFormatTests {
    @Test(arguments: [
        ("application/vnd.dev.sigstore.bundle+json;version=0.1", SigstoreBundle.Version.v01),
        ("application/vnd.dev.sigstore.bundle+json;version=0.2", .v02),
        ("application/vnd.dev.sigstore.bundle+json;version=0.3", .v03),
        ("application/vnd.dev.sigstore.bundle.v0.3+json", .v03),
        ("application/vnd.dev.sigstore.bundle.v0.3.1+json", .v03),
    ])
    func knownVersions(_ mediaType: String, _ version: SigstoreBundle.Version) throws {
        #expect(try SigstoreBundle.version(of: mediaType) == version)
    }

    @Test(arguments: [
        "application/vnd.dev.sigstore.bundle+json;version=99.9", "application/vnd.dev.sigstore.bundle.v0.4+json",
        "application/vnd.dev.sigstore.bundle.v0.1+json", "application/vnd.dev.sigstore.bundle+json",
        "application/json", "application/vnd.dev.sigstore.bundle.v0.3.x+json",
    ])
    func unknownVersions(_ mediaType: String) {
        #expect(throws: VerificationError.self) { try SigstoreBundle.version(of: mediaType) }
    }

    static func object(_ name: String) throws -> [String: Any] {
        try #require(
            try JSONSerialization.jsonObject(with: Fixtures.data("test-pki/\(name).sigstore.json")) as? [String: Any])
    }

    static func parse(_ object: [String: Any]) throws -> SigstoreBundle {
        try SigstoreBundle(json: JSONSerialization.data(withJSONObject: object))
    }

    @Test func materialRules() throws {
        var object = try Self.object("rekor2-message")
        var material = object["verificationMaterial"] as! [String: Any]
        let certificate = material["certificate"] as! [String: Any]
        // v0.3 carries one certificate, never a chain.
        material["certificate"] = nil
        material["x509CertificateChain"] = ["certificates": [certificate]]
        object["verificationMaterial"] = material
        expectError(
            .malformed(what: "Sigstore bundle", reason: "a v0.3 bundle carries a certificate, not a chain")
        ) { try Self.parse(object) }
        // A v0.2 chain may hold intermediates, not a root, and not nothing.
        object["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2"
        _ = try Self.parse(object)
        let root = try RekorV2Tests.root().certificateAuthorities[0].chain.last!
        material["x509CertificateChain"] = [
            "certificates": [certificate, ["rawBytes": root.der.base64EncodedString()]]
        ]
        object["verificationMaterial"] = material
        expectError(
            .malformed(what: "Sigstore bundle", reason: "the certificate chain includes the root \(root.subject)")
        ) { try Self.parse(object) }
        material["x509CertificateChain"] = ["certificates": [Any]()]
        object["verificationMaterial"] = material
        expectError(.malformed(what: "Sigstore bundle", reason: "the certificate chain is empty")) {
            try Self.parse(object)
        }
        material["x509CertificateChain"] = nil
        material["publicKey"] = ["hint": "x"]
        material["certificate"] = certificate
        object["verificationMaterial"] = material
        #expect(throws: VerificationError.self) { try Self.parse(object) }
    }

    @Test func contentRules() throws {
        var object = try Self.object("rekor2-dsse")
        var envelope = object["dsseEnvelope"] as! [String: Any]
        let signature = (envelope["signatures"] as! [Any])[0]
        envelope["signatures"] = [signature, signature]
        object["dsseEnvelope"] = envelope
        expectError(.malformed(what: "Sigstore bundle", reason: "DSSE envelope has 2 signatures, not one")) {
            try Self.parse(object)
        }
        object["messageSignature"] = ["signature": "AAAA"]
        expectError(.malformed(what: "Sigstore bundle", reason: "needs exactly one of dsseEnvelope, messageSignature"))
        {
            try Self.parse(object)
        }
    }

    @Test func entryRules() throws {
        var object = try Self.object("rekor2-message")
        var material = object["verificationMaterial"] as! [String: Any]
        var entries = material["tlogEntries"] as! [[String: Any]]
        entries.append(entries[0])
        material["tlogEntries"] = entries
        object["verificationMaterial"] = material
        #expect(throws: VerificationError.self) { try Self.parse(object) }  // duplicate entry
        entries = [entries[0]]
        entries[0]["logIndex"] = "-3"
        material["tlogEntries"] = entries
        object["verificationMaterial"] = material
        expectError(.malformed(what: "transparency log entry", reason: "negative logIndex -3")) {
            try Self.parse(object)
        }
        entries[0]["logIndex"] = 5  // protobuf JSON also accepts numbers
        material["tlogEntries"] = entries
        object["verificationMaterial"] = material
        #expect(try Self.parse(object).transparencyLogEntries[0].isRekorV2)
    }

    /// `SigstoreBundle.signImage` makes what cosign v3 `sign --key --tlog-upload=false` makes, and it verifies.
    @Test func signedImageBundle() throws {
        let key = try PrivateKey.generateP256()
        let digest = SHA256Hasher.digest(Data("manifest".utf8))
        let data = try SigstoreBundle.signImage(digest: digest, annotations: ["env": "prod"], key: key)
        let bundle = try SigstoreBundle(json: data)
        #expect(bundle.mediaType == SigstoreBundle.mediaTypeV03)
        #expect(bundle.material == .publicKey(hint: Data(hex: key.publicKey.fingerprint)!.base64EncodedString()))
        #expect(bundle.transparencyLogEntries.isEmpty && bundle.timestamps.isEmpty)
        let statement = try InTotoStatement(parsing: try #require(bundle.envelope).payload)
        #expect(statement.subjects.map(\.digest) == [["sha256": digest.hex]])
        let verified = try CosignVerifier(policy: .key([key.publicKey]), requiredAnnotations: ["env": "prod"])
            .verify(bundle: bundle, digest: digest)
        #expect(verified.predicateType == SigstoreBundle.imageSignaturePredicate)
        #expect(verified.annotations == ["env": .string("prod")])
        expectError(.missingAnnotation(key: "env")) {
            try CosignVerifier(policy: .key([key.publicKey]), requiredAnnotations: ["env": "dev"])
                .verify(bundle: bundle, digest: digest)
        }
    }
}
