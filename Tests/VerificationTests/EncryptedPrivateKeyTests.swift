import Foundation
import OCI
import Testing
import Verification

@Suite struct EncryptedPrivateKeyTests {
    /// sigstore-rs' key written by `cosign generate-key-pair` with an empty password (scrypt N=65536).
    @Test func cosignGeneratedKeyWithEmptyPasswordDecrypts() throws {
        let pem = try Fixtures.text("sigstore-rs-keys/cosign_generated_encrypted_empty_private.key")
        let key = try EncryptedPrivateKey.decrypt(pem: pem, password: Data())
        #expect(key.publicKey.algorithm == .ecdsaP256)
        try expectSignsAndVerifies(key)
    }

    /// The legacy `ENCRYPTED COSIGN PRIVATE KEY` label, password "123" (sigstore-rs' ecdsa tests).
    @Test func legacyLabelledKeyDecrypts() throws {
        let pem = try Fixtures.text("sigstore-rs-keys/ecdsa_encrypted_private.key")
        #expect(pem.hasPrefix("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----"))
        let key = try EncryptedPrivateKey.decrypt(pem: pem, password: Data("123".utf8))
        #expect(key.publicKey.algorithm == .ecdsaP256)
        try expectSignsAndVerifies(key)
    }

    @Test func wrongPasswordFails() throws {
        let pem = try Fixtures.text("sigstore-rs-keys/ecdsa_encrypted_private.key")
        let error = capturedError { try EncryptedPrivateKey.decrypt(pem: pem, password: Data("124".utf8)) }
        #expect(error == .wrongPassword)
        #expect(error?.description.contains("wrong password") == true)
        let empty = try Fixtures.text("sigstore-rs-keys/cosign_generated_encrypted_empty_private.key")
        #expect(capturedError { try EncryptedPrivateKey.decrypt(pem: empty, password: Data("x".utf8)) } != nil)
    }

    @Test func otherPEMLabelsAreRefused() throws {
        let pub = try Fixtures.text("containers-image/cosign.pub")
        let error = capturedError { try EncryptedPrivateKey.decrypt(pem: pub, password: Data()) }
        #expect(error?.description.contains("found 'PUBLIC KEY'") == true)
    }

    /// A hostile key file must not make mcvfs allocate gigabytes before the password is even checked.
    @Test func excessiveScryptParametersAreRefused() throws {
        let json =
            #"{"kdf":{"name":"scrypt","params":{"N":1073741824,"r":8,"p":1},"salt":"AAAA"},"#
            + #""cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"ciphertext":"AAAA"}"#
        let error = capturedError { try EncryptedPrivateKey.decrypt(json: Data(json.utf8), password: Data()) }
        #expect(error?.description.contains("unsupported scrypt parameters") == true)
    }

    @Test func generateEncryptDecryptRoundTrip() throws {
        let key = try PrivateKey.generateP256()
        let password = Data("correct horse".utf8)
        let pem = try EncryptedPrivateKey.encrypt(key, password: password)
        #expect(pem.hasPrefix("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"))
        #expect(pem.hasSuffix("\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"))
        // Go's pem.Encode: 64-column body lines.
        let body = pem.split(separator: "\n").dropFirst().dropLast()
        #expect(body.dropLast().allSatisfy { $0.count == 64 })
        let decrypted = try EncryptedPrivateKey.decrypt(pem: pem, password: password)
        #expect(decrypted == key)
        #expect(capturedError { try EncryptedPrivateKey.decrypt(pem: pem, password: Data("wrong".utf8)) } != nil)
    }

    /// The JSON inside is go-securesystemslib's `json.Marshal` of its `data` struct, field for field.
    @Test func encryptedJSONHasGoFieldOrder() throws {
        let key = try PrivateKey.generateP256()
        let salt = Data(repeating: 7, count: 32)
        let nonce = Data(repeating: 9, count: 24)
        let pem = try EncryptedPrivateKey.encrypt(
            key, password: Data(), parameters: .init(n: 1024, r: 8, p: 1), salt: salt, nonce: nonce)
        let base64 = pem.split(separator: "\n").dropFirst().dropLast().joined()
        let json = String(decoding: try #require(Data(base64Encoded: base64)), as: UTF8.self)
        let prefix =
            #"{"kdf":{"name":"scrypt","params":{"N":1024,"r":8,"p":1},"#
            + #""salt":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="},"#
            + #""cipher":{"name":"nacl/secretbox","nonce":"CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJ"},"ciphertext":""#
        #expect(json.hasPrefix(prefix))
        #expect(try EncryptedPrivateKey.decrypt(pem: pem, password: Data()) == key)
    }

    private func expectSignsAndVerifies(_ key: PrivateKey) throws {
        let message = Data("mcvfs".utf8)
        let signature = try key.sign(message)
        #expect(try key.publicKey.isValidSignature(signature, over: message))
    }
}
