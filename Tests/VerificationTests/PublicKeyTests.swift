import ContentHash
import Foundation
import Testing
import Verification

@Suite struct PublicKeyTests {
    @Test func cosignPublicKeysAreP256() throws {
        for name in ["cosign.pub", "cosign2.pub", "rekor.pub"] {
            #expect(try Fixtures.key(name).algorithm == .ecdsaP256)
        }
    }

    @Test func rekorFingerprintIsItsLogID() throws {
        // Rekor names its log by sha256 of the key's DER SPKI; every vector's bundle carries this logID.
        #expect(
            try Fixtures.key("rekor.pub").fingerprint
                == "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d")
    }

    @Test func pemRoundTrips() throws {
        let key = try Fixtures.key("cosign.pub")
        #expect(try PublicKey(pem: key.pem) == key)
        #expect(key.pem == (try Fixtures.text("containers-image/cosign.pub")))
    }

    @Test func certificateKeys() throws {
        let rsa = try Certificate.parseChain(pem: Fixtures.text("containers-image/pki-cert"))
        #expect(rsa.first?.publicKey.algorithm == .rsa(bits: 4096))
        let root = try Certificate(pem: Fixtures.text("containers-image/fulcio_v1.crt.pem"))
        #expect(PublicKey(certificate: root).algorithm == .ecdsaP384)
    }

    @Test func refusesOtherPEM() throws {
        let certificate = try Fixtures.text("containers-image/fulcio_v1.crt.pem")
        expectError(.malformed(what: "public key PEM", reason: "expected 'PUBLIC KEY', found 'CERTIFICATE'")) {
            try PublicKey(pem: certificate)
        }
        #expect(throws: VerificationError.self) { try PublicKey(pem: "not a key") }
        #expect(throws: VerificationError.self) { try PublicKey(spki: Data([0x30, 0x03, 0x02, 0x01, 0x00])) }
    }

    @Test func signAndVerify() throws {
        let key = try PrivateKey.generateP256()
        let message = Data("payload".utf8)
        let signature = try key.sign(message)
        try key.publicKey.verify(signature: signature, over: message)
        #expect(try !key.publicKey.isValidSignature(signature, over: message.flipping(at: 0)))
        #expect(try !key.publicKey.isValidSignature(signature.flipping(at: -1), over: message))
        // Garbage that is not even DER fails as a bad signature, not an OpenSSL fault.
        expectError(.badSignature(key: key.publicKey.description)) {
            try key.publicKey.verify(signature: Data("junk".utf8), over: message)
        }
        #expect(try PrivateKey(pkcs8: key.pkcs8) == key)
    }

    @Test func p384UsesSHA256ByDefault() throws {
        // cosign's verifiers hash with SHA-256 whatever the curve; a SHA-384 signature must not pass by default.
        let root = try Certificate(pem: Fixtures.text("containers-image/fulcio_v1.crt.pem"))
        #expect(root.publicKey.algorithm == .ecdsaP384)
        let key = try PrivateKey.generateP256()
        let sig384 = try key.sign(Data("x".utf8), hash: .sha384)
        #expect(try !key.publicKey.isValidSignature(sig384, over: Data("x".utf8)))
        #expect(try key.publicKey.isValidSignature(sig384, over: Data("x".utf8), hash: .sha384))
    }
}
