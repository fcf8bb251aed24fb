import ContentHash
import Foundation
import OCI
import Testing
import Verification

@testable import Trust

private let digestA = try! Digest(parsing: "sha256:" + String(repeating: "aa", count: 32))
private let digestB = try! Digest(parsing: "sha256:" + String(repeating: "bb", count: 32))
private let indexDigest = try! Digest(parsing: "sha256:" + String(repeating: "cc", count: 32))

/// A key-based Sigstore bundle v0.3 over an in-toto statement about `digest`, as cosign v3 makes without a log.
private func bundle(digest: Digest, predicate: String, key: PrivateKey) throws -> SigstoreBundle {
    let statement = Data(
        (#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"r","digest":{"sha256":"\#(digest.hex)"}}],"#
            + #""predicateType":"\#(predicate)","predicate":{}}"#).utf8)
    let type = "application/vnd.in-toto+json"
    var pae = Data("DSSEv1 \(type.utf8.count) \(type) \(statement.count) ".utf8)
    pae.append(statement)
    let signature = try key.sign(pae)
    let json =
        #"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","#
        + #""verificationMaterial":{"publicKey":{"hint":""}},"#
        + #""dsseEnvelope":{"payload":"\#(statement.base64EncodedString())","payloadType":"\#(type)","#
        + #""signatures":[{"sig":"\#(signature.base64EncodedString())"}]}}"#
    return try SigstoreBundle(json: Data(json.utf8))
}

private func entry(_ name: String, _ digest: Digest, index: Digest? = nil) -> Catalog.Entry {
    Catalog.Entry(
        name: name, digest: digest, mediaType: MediaType.ociManifest,
        image: CacheImage(name: name, digest: digest, layers: [], labels: [:]), kinds: [], targets: nil,
        skipReason: nil, indexDigest: index)
}

@Suite struct ImageVerifierTests {
    let key = try! PrivateKey.generateP256()

    @Test func legacyAndBundleSignaturesBothCount() throws {
        var found = SignatureFinder.Found()
        found.legacy = [try CosignSignature.sign(digest: digestA, reference: "r", key: key)]
        found.bundles = [try bundle(digest: digestA, predicate: ImageVerifier.signaturePredicate, key: key)]
        let verdict = ImageVerifier.verify(found, digest: digestA, policy: .keys([key.publicKey]))
        #expect(verdict.isTrusted)
        #expect(verdict.accepted.map(\.layout) == [.legacy, .bundle])
        #expect(verdict.rejected.isEmpty)
    }

    /// An attestation about the image (SBOM, provenance) signed by the trusted key is not a signature of it.
    @Test func attestationBundlesDoNotCountAsSignatures() throws {
        var found = SignatureFinder.Found()
        found.bundles = [try bundle(digest: digestA, predicate: "https://slsa.dev/provenance/v1", key: key)]
        let verdict = ImageVerifier.verify(found, digest: digestA, policy: .keys([key.publicKey]))
        #expect(!verdict.isTrusted)
        #expect(verdict.rejected.first?.reason.contains("is an attestation, not an image signature") == true)
    }

    @Test func eachFailureKeepsItsReason() throws {
        let other = try PrivateKey.generateP256()
        var found = SignatureFinder.Found()
        found.legacy = [
            try CosignSignature.sign(digest: digestA, reference: "r", key: other),
            try CosignSignature.sign(digest: digestB, reference: "r", key: key),
        ]
        found.problems = ["signature tag x is unusable"]
        let verdict = ImageVerifier.verify(found, digest: digestA, policy: .keys([key.publicKey]))
        #expect(!verdict.isTrusted)
        let reasons = verdict.rejected.map(\.reason)
        #expect(reasons.count == 3)
        #expect(reasons[0] == "signature tag x is unusable")
        #expect(reasons[1].contains("does not verify"))
        #expect(reasons[2].contains("names \(digestB)"))
        #expect(verdict.description.hasPrefix("no valid signature for \(digestA)"))
    }

    @Test func nothingFoundSaysSo() {
        let verdict = ImageVerifier.verify(.init(), digest: digestA, policy: .keys([key.publicKey]))
        #expect(!verdict.isTrusted)
        #expect(verdict.description == "no signature found for \(digestA)")
    }

    @Test func anyAlternativeOfAPolicyWill() throws {
        let other = try PrivateKey.generateP256()
        var found = SignatureFinder.Found()
        found.legacy = [try CosignSignature.sign(digest: digestA, reference: "r", key: other)]
        let policy = TrustPolicy.anyOf([.keys([key.publicKey]), .keys([other.publicKey])])
        #expect(ImageVerifier.verify(found, digest: digestA, policy: policy).isTrusted)
        let none = ImageVerifier.verify(found, digest: digestA, policy: .rejectAll("no rule"))
        #expect(!none.isTrusted)
        #expect(none.rejected.map(\.reason) == ["no rule"])
    }
}

@Suite struct CatalogEnforcementTests {
    let key = try! PrivateKey.generateP256()

    func verdicts(_ signed: Set<Digest>) -> (Digest) -> Verdict {
        { digest in
            var verdict = Verdict(digest: digest)
            if signed.contains(digest) {
                let signature = try! CosignSignature.sign(digest: digest, reference: "r", key: key)
                let verified = try! CosignVerifier(policy: .key([key.publicKey])).verify(signature, digest: digest)
                verdict.accepted = [.init(layout: .legacy, signature: verified)]
            }
            return verdict
        }
    }

    @Test func unsignedImagesBecomeSkippedWithTheReason() {
        var catalog = Catalog(repository: "r", reference: "r", entries: [entry("a", digestA), entry("b", digestB)])
        var asked: [Digest] = []
        let refused = catalog.enforce(.keys([key.publicKey])) { digest in
            asked.append(digest)
            return verdicts([digestA])(digest)
        }
        #expect(asked == [digestA, digestB])
        #expect(catalog.used.map(\.name) == ["a"])
        #expect(catalog.entries[0].signedBy == ["key sha256:\(key.publicKey.fingerprint)"])
        #expect(refused.map(\.name) == ["b"])
        let reason = catalog.entries[1].skipReason ?? ""
        #expect(reason.hasPrefix("signature policy (key sha256:"))
        #expect(reason.hasSuffix("not met: no signature found for \(digestB)"))
    }

    /// A signed index covers the manifests it lists; each digest is asked once.
    @Test func signedIndexCoversItsManifests() {
        var catalog = Catalog(
            repository: "r", reference: "r:multi",
            entries: [entry("multi[0]", digestA, index: indexDigest), entry("multi[1]", digestB, index: indexDigest)])
        var asked: [Digest] = []
        let refused = catalog.enforce(.keys([key.publicKey])) { digest in
            asked.append(digest)
            return verdicts([indexDigest])(digest)
        }
        #expect(refused.isEmpty)
        #expect(catalog.used.count == 2)
        #expect(asked == [digestA, indexDigest, digestB])
    }

    @Test func skippedEntriesAreNotVerified() {
        var skipped = entry("gpu", digestA)
        skipped.skipReason = "targets cuda:80 do not match"
        var catalog = Catalog(repository: "r", reference: "r", entries: [skipped])
        let refused = catalog.enforce(.keys([key.publicKey])) { _ in
            Issue.record("a skipped image must not be verified")
            return Verdict(digest: digestA)
        }
        #expect(refused.isEmpty)
        #expect(catalog.entries[0].skipReason == "targets cuda:80 do not match")
    }
}

@Suite struct PolicyFileTests {
    func write(_ key: PrivateKey, to directory: URL, name: String) throws {
        try Data(key.publicKey.pem.utf8).write(to: directory.appendingPathComponent(name))
    }

    @Test func repositoriesMatchExactlyThenByPrefixThenStar() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let (exact, prefix, star) = (
            try PrivateKey.generateP256(), try PrivateKey.generateP256(), try PrivateKey.generateP256()
        )
        try write(exact, to: directory, name: "exact.pub")
        try write(prefix, to: directory, name: "prefix.pub")
        try write(star, to: directory, name: "star.pub")
        let json = """
            {"repositories": {
              "reg.example/org/cache": {"keys": ["exact.pub"], "annotations": {"env": "prod"}},
              "reg.example/org/*": {"keys": ["prefix.pub"]},
              "reg.example/*": {"keys": ["star.pub"]},
              "*": {"identities": [{"identity": "ci@example.com", "issuer": "https://issuer.example"}]}
            }}
            """
        let file = try PolicyFile(json: Data(json.utf8), baseDirectory: directory)
        func keys(_ repository: String) -> [PublicKey] {
            file.policy(for: repository).verifiers.flatMap { verifier -> [PublicKey] in
                if case .key(let keys) = verifier.policy { return keys }
                return []
            }
        }
        #expect(keys("reg.example/org/cache") == [exact.publicKey])
        #expect(file.policy(for: "reg.example/org/cache").verifiers[0].requiredAnnotations == ["env": "prod"])
        #expect(keys("reg.example/org/other") == [prefix.publicKey])
        #expect(keys("reg.example/team/x") == [star.publicKey])
        let keyless = file.policy(for: "elsewhere.example/a")
        #expect(keyless.description == "identity ci@example.com (issuer https://issuer.example)")
    }

    @Test func unmatchedRepositoryTrustsNothing() throws {
        let json = #"{"repositories": {}}"#
        let file = try PolicyFile(json: Data(json.utf8), baseDirectory: URL(fileURLWithPath: "/"))
        let policy = file.policy(for: "reg.example/a")
        #expect(policy.verifiers.isEmpty)
        #expect(policy.description.contains("no rule for reg.example/a"))
    }

    @Test func mistakesFailAtLoad() {
        let base = URL(fileURLWithPath: "/nonexistent")
        for json in [
            #"{"repositories": {"a": {}}}"#,
            #"{"repositories": {"a": {"keys": ["missing.pub"]}}}"#,
            #"{"repositories": {"a": {"identities": [{"identity": "x", "identityRegexp": "y"}]}}}"#,
            #"{"repos": {}}"#,
        ] {
            #expect(throws: PolicyFile.Error.self) { try PolicyFile(json: Data(json.utf8), baseDirectory: base) }
        }
    }
}
