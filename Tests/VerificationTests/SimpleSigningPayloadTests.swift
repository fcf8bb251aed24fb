import Foundation
import OCI
import Testing
import Verification

@Suite struct SimpleSigningPayloadTests {
    let digest = try! Digest(parsing: "sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f")

    @Test func makeMatchesCosignBytes() throws {
        // rekor-payload is a payload cosign itself wrote (Go json.Marshal, no annotations).
        let cosign = try Fixtures.data("containers-image/internal-testdata/rekor-payload")
        let made = SimpleSigningPayload.make(
            digest: digest, reference: "192.168.64.2:5000/test-repo-2100826901021538654/alpine")
        #expect(made == cosign)
    }

    @Test(arguments: [
        "dir-img-cosign-valid", "dir-img-cosign-key-rekor-valid", "dir-img-cosign-fulcio-rekor-valid",
        "dir-img-cosign-pki-valid",
    ])
    func makeMatchesEveryCosignVector(_ vector: String) throws {
        // Each of these payloads was written by cosign; rebuilding it from its own fields gives the same bytes.
        let (signature, digest) = try Fixtures.vector(vector)
        let parsed = try SimpleSigningPayload(parsing: signature.payload)
        #expect(SimpleSigningPayload.make(digest: digest, reference: parsed.dockerReference) == signature.payload)
    }

    @Test func makeKnownExample() throws {
        let made = SimpleSigningPayload.make(digest: digest, reference: "quay.io/a/b")
        let expected =
            #"{"critical":{"identity":{"docker-reference":"quay.io/a/b"},"image":{"docker-manifest-digest":"#
            + #""sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f"},"#
            + #""type":"cosign container image signature"},"optional":null}"#
        #expect(String(decoding: made, as: UTF8.self) == expected)
    }

    @Test func makeSortsAndEscapesAnnotationsAsGo() throws {
        let made = SimpleSigningPayload.make(
            digest: digest, reference: "r/x",
            annotations: ["z": "1", "a": "<b>&\"\\\n\u{1}\u{2028}é", "B": "upper sorts first"])
        let text = String(decoding: made, as: UTF8.self)
        // Go: keys sorted by bytes ("B" < "a" < "z"); HTML-safe escapes; \u0001; U+2028 escaped; é literal.
        #expect(
            text.hasSuffix(
                #""optional":{"B":"upper sorts first","a":"\u003cb\u003e\u0026\"\\\n\u0001\u2028é","z":"1"}}"#))
        let parsed = try SimpleSigningPayload(parsing: made)
        #expect(parsed.optional["a"] == .string("<b>&\"\\\n\u{1}\u{2028}é"))
        #expect(parsed.dockerReference == "r/x")
        #expect(parsed.dockerManifestDigest == digest.description)
    }

    @Test func parsesVectorsWithoutReserialising() throws {
        let (signature, manifestDigest) = try Fixtures.vector("dir-img-cosign-valid-with-tag")
        let payload = try SimpleSigningPayload(parsing: signature.payload)
        #expect(payload.dockerReference == "192.168.64.2:5000/skopeo-signed:tag")
        #expect(payload.dockerManifestDigest == manifestDigest.description)
        #expect(payload.optional["creator"] == .string("containers/image 5.21.2-dev"))
        #expect(payload.optional["timestamp"] == .number(1_657_296_609))
        try payload.requireDigest(manifestDigest)
        try payload.requireAnnotations(["creator": "containers/image 5.21.2-dev"])
        // A number never equals a wanted string, as in cosign's interface{} comparison.
        expectError(.missingAnnotation(key: "timestamp")) {
            try payload.requireAnnotations(["timestamp": "1657296609"])
        }
    }

    @Test func refusesOtherDocuments() {
        #expect(throws: VerificationError.self) { try SimpleSigningPayload(parsing: Data("{}".utf8)) }
        #expect(throws: VerificationError.self) { try SimpleSigningPayload(parsing: Data("[1]".utf8)) }
        let wrongType = Data(
            (#"{"critical":{"identity":{"docker-reference":"a"},"image":{"docker-manifest-digest":"sha256:00"},"#
                + #""type":"atomic container signature"},"optional":null}"#).utf8)
        #expect(throws: VerificationError.self) { try SimpleSigningPayload(parsing: wrongType) }
    }
}
