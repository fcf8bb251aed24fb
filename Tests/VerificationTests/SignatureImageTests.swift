import ContentHash
import Foundation
import OCI
import Testing
import Verification

@Suite struct SignatureImageTests {
    let digest = try! Digest(parsing: "sha256:" + String(repeating: "ab", count: 32))

    /// The first signature makes exactly the image `cosign sign --key --tlog-upload=false` pushes: this config is the
    /// one cosign's `.sig` images carry (zero timestamps, one diff ID per layer).
    @Test func firstSignatureMatchesCosignLayout() throws {
        let key = try PrivateKey.generateP256()
        let signature = try CosignSignature.sign(digest: digest, reference: "localhost:5000/org/cache", key: key)
        var image = SignatureImage()
        try image.append(signature)
        let payloadDigest = SHA256Hasher.digest(signature.payload)
        let config =
            #"{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"#
            + #""os":"","rootfs":{"type":"layers","diff_ids":["\#(payloadDigest)"]},"config":{}}"#
        #expect(String(decoding: image.config, as: UTF8.self) == config)
        let manifest =
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#
            + #""config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":\#(image.config.count),"#
            + #""digest":"\#(SHA256Hasher.digest(image.config))"},"#
            + #""layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","#
            + #""size":\#(signature.payload.count),"digest":"\#(payloadDigest)","#
            + #""annotations":{"dev.cosignproject.cosign/signature":"\#(signature.annotations.values.first!)"}}]}"#
        #expect(String(decoding: image.manifestData, as: UTF8.self) == manifest)
        #expect(image.newBlobs == [payloadDigest: signature.payload])
        // What a verifier reads back is what was signed.
        let read = try image.signatures { image.newBlobs[$0.digest]! }
        #expect(read == [signature])
        #expect(try CosignVerifier(policy: .key([key.publicKey])).verify(read, digest: digest).count == 1)
    }

    /// Appending keeps every existing layer and its annotations untouched and grows the config by one entry.
    @Test func appendKeepsOtherSignatures() throws {
        let first = try PrivateKey.generateP256()
        let second = try PrivateKey.generateP256()
        var image = SignatureImage()
        let a = try CosignSignature.sign(digest: digest, reference: "r/a", key: first)
        try image.append(a)
        let existingLayer = image.manifest.layers[0]
        // Round trip through the registry: parse what was pushed.
        let pushed = try JSONDecoder().decode(Manifest.self, from: image.manifestData)
        var reopened = try SignatureImage(manifest: pushed, config: image.config)
        let b = try CosignSignature.sign(digest: digest, reference: "r/a", annotations: ["env": "prod"], key: second)
        try reopened.append(b)
        #expect(reopened.manifest.layers.count == 2)
        #expect(reopened.manifest.layers[0] == existingLayer)
        let config = String(decoding: reopened.config, as: UTF8.self)
        #expect(config.contains(#""history":[{"created":"0001-01-01T00:00:00Z"},{"created":"0001-01-01T00:00:00Z"}]"#))
        #expect(
            config.contains(
                #""diff_ids":["\#(SHA256Hasher.digest(a.payload))","\#(SHA256Hasher.digest(b.payload))"]"#))
        #expect(reopened.manifest.config.digest == SHA256Hasher.digest(reopened.config))
        let blobs = [SHA256Hasher.digest(a.payload): a.payload, SHA256Hasher.digest(b.payload): b.payload]
        let read = try reopened.signatures { blobs[$0.digest]! }
        #expect(read == [a, b])
        // Each key verifies its own signature, and only that one.
        #expect(try CosignVerifier(policy: .key([first.publicKey])).verify(read, digest: digest).count == 1)
        #expect(try CosignVerifier(policy: .key([second.publicKey])).verify(read, digest: digest).count == 1)
    }

    /// Fields go-containerregistry's ConfigFile keeps (a creation time, history comments) survive the append.
    @Test func appendPreservesExistingConfigFields() throws {
        let config = Data(
            (#"{"architecture":"amd64","created":"2023-02-17T09:25:33.91047962-08:00","#
                + #""history":[{"created":"0001-01-01T00:00:00Z","comment":"first"}],"os":"linux","#
                + #""rootfs":{"type":"layers","diff_ids":["sha256:00"]},"config":{"Labels":{"a":"b"}}}"#).utf8)
        let manifest = Manifest(
            config: Descriptor(
                mediaType: MediaType.ociConfig, digest: SHA256Hasher.digest(config), size: Int64(config.count)),
            layers: [])
        var image = try SignatureImage(manifest: manifest, config: config)
        try image.append(try CosignSignature.sign(digest: digest, reference: "r", key: PrivateKey.generateP256()))
        let text = String(decoding: image.config, as: UTF8.self)
        #expect(text.hasPrefix(#"{"architecture":"amd64","created":"2023-02-17T09:25:33.91047962-08:00","#))
        #expect(text.contains(#"{"created":"0001-01-01T00:00:00Z","comment":"first"}"#))
        #expect(text.hasSuffix(#""config":{"Labels":{"a":"b"}}}"#))
    }

    @Test func duplicateDetection() throws {
        let key = try PrivateKey.generateP256()
        let other = try PrivateKey.generateP256()
        let existing = try CosignSignature.sign(digest: digest, reference: "r", key: key)
        // A fresh signature of the same payload by the same key is a duplicate (ECDSA bytes differ, payload not).
        let again = try CosignSignature.sign(digest: digest, reference: "r", key: key)
        #expect(SignatureImage.duplicate(of: again, in: [existing], key: key.publicKey) == existing)
        // Another key, another payload (annotations), or another digest are not.
        #expect(SignatureImage.duplicate(of: again, in: [existing], key: other.publicKey) == nil)
        let annotated = try CosignSignature.sign(digest: digest, reference: "r", annotations: ["a": "b"], key: key)
        #expect(SignatureImage.duplicate(of: annotated, in: [existing], key: key.publicKey) == nil)
    }

    @Test func malformedExistingConfigIsRefused() throws {
        let config = Data("[]".utf8)
        let manifest = Manifest(
            config: Descriptor(mediaType: MediaType.ociConfig, digest: SHA256Hasher.digest(config), size: 2), layers: []
        )
        #expect(capturedError { try SignatureImage(manifest: manifest, config: config) } != nil)
    }
}
