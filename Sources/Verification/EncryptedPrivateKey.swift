import CSodium
import Foundation

/// cosign's `cosign.key`: a PEM `ENCRYPTED SIGSTORE PRIVATE KEY` (older cosign: `ENCRYPTED COSIGN PRIVATE KEY`)
/// whose body is the JSON that go-securesystemslib's `encrypted.Encrypt` writes over a DER PKCS#8 key:
/// `{"kdf":{"name":"scrypt","params":{"N","r","p"},"salt"},"cipher":{"name":"nacl/secretbox","nonce"},"ciphertext"}`.
/// https://github.com/secure-systems-lab/go-securesystemslib/blob/main/encrypted/encrypted.go
///
/// libsodium provides both primitives (scrypt, XSalsa20-Poly1305 secretbox); this file is its only user.
public enum EncryptedPrivateKey {
    /// The label `cosign generate-key-pair` writes today.
    public static let pemLabel = "ENCRYPTED SIGSTORE PRIVATE KEY"
    /// The label of keys written by cosign before 2.0, still read by cosign.
    public static let legacyPEMLabel = "ENCRYPTED COSIGN PRIVATE KEY"

    /// scrypt cost parameters as the JSON names them.
    public struct ScryptParameters: Sendable, Equatable {
        public var n: Int
        public var r: Int
        public var p: Int

        public init(n: Int, r: Int, p: Int) {
            self.n = n
            self.r = r
            self.p = p
        }

        /// go-securesystemslib's defaults, which `cosign generate-key-pair` uses.
        public static let cosign = ScryptParameters(n: 32768, r: 8, p: 1)

        /// Refuses parameters that are not scrypt's (N a power of two) or would make a hostile key file cost
        /// more than 1 GiB of memory or minutes of CPU to try.
        func check() throws(VerificationError) {
            guard n > 1, n & (n - 1) == 0, n <= 1 << 20, (1...32).contains(r), (1...16).contains(p),
                128 * n * r <= 1 << 30
            else {
                throw .malformed(
                    what: "encrypted private key", reason: "unsupported scrypt parameters N=\(n) r=\(r) p=\(p)")
            }
        }
    }

    /// Decrypts a `cosign.key`.
    /// - Parameters:
    ///   - pem: the file's text.
    ///   - password: the password bytes (UTF-8; `COSIGN_PASSWORD` or what was typed), possibly empty.
    /// - Returns: the private key (its public half is `cosign.pub`'s key).
    /// - Throws: `VerificationError.wrongPassword`; `.malformed` for another PEM label, unsupported KDF or cipher
    ///   (secretbox authentication fails).
    public static func decrypt(pem: String, password: Data) throws(VerificationError) -> PrivateKey {
        let blocks = try PEMBlock.parse(pem, what: "encrypted private key PEM")
        guard let block = blocks.first else {
            throw .malformed(what: "encrypted private key PEM", reason: "no PEM block")
        }
        guard block.label == pemLabel || block.label == legacyPEMLabel else {
            throw .malformed(
                what: "encrypted private key PEM", reason: "expected '\(pemLabel)', found '\(block.label)'")
        }
        return try decrypt(json: block.der, password: password)
    }

    /// Decrypts the JSON body of a `cosign.key` PEM block.
    public static func decrypt(json: Data, password: Data) throws(VerificationError) -> PrivateKey {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: json)
        } catch {
            throw .malformed(what: "encrypted private key", reason: "\(error)")
        }
        guard wire.kdf.name == "scrypt" else {
            throw .malformed(what: "encrypted private key", reason: "unsupported KDF '\(wire.kdf.name)'")
        }
        guard wire.cipher.name == "nacl/secretbox" else {
            throw .malformed(what: "encrypted private key", reason: "unsupported cipher '\(wire.cipher.name)'")
        }
        let parameters = ScryptParameters(n: wire.kdf.params.n, r: wire.kdf.params.r, p: wire.kdf.params.p)
        try parameters.check()
        let salt = try decodeBase64(wire.kdf.salt, what: "encrypted private key salt")
        let nonce = try decodeBase64(wire.cipher.nonce, what: "encrypted private key nonce")
        let ciphertext = try decodeBase64(wire.ciphertext, what: "encrypted private key ciphertext")
        guard nonce.count == Int(crypto_secretbox_NONCEBYTES) else {
            throw .malformed(what: "encrypted private key", reason: "nonce is \(nonce.count) bytes, not 24")
        }
        guard ciphertext.count >= Int(crypto_secretbox_MACBYTES) else {
            throw .malformed(what: "encrypted private key", reason: "ciphertext is shorter than its MAC")
        }
        let key = try deriveKey(password: password, salt: salt, parameters: parameters)
        var plaintext = [UInt8](repeating: 0, count: ciphertext.count - Int(crypto_secretbox_MACBYTES))
        defer { sodium_memzero(&plaintext, plaintext.count) }
        let c = Array(ciphertext)
        let n = Array(nonce)
        let k = Array(key)
        let status = crypto_secretbox_open_easy(&plaintext, c, UInt64(c.count), n, k)
        // The MAC cannot tell a wrong password from changed bytes; a wrong password is by far the common case.
        guard status == 0 else { throw .wrongPassword }
        return try PrivateKey(pkcs8: Data(plaintext))
    }

    /// Encrypts `key` as `cosign generate-key-pair` does: fresh 32-byte salt and 24-byte nonce, Go's
    /// `json.Marshal` field order, PEM `ENCRYPTED SIGSTORE PRIVATE KEY` in 64-column lines.
    /// - Parameters:
    ///   - salt, nonce: fixed values for tests; random when `nil`.
    public static func encrypt(
        _ key: PrivateKey, password: Data, parameters: ScryptParameters = .cosign, salt: Data? = nil,
        nonce: Data? = nil
    ) throws(VerificationError) -> String {
        try parameters.check()
        try initialize()
        let salt = salt ?? random(32)
        let nonce = nonce ?? random(Int(crypto_secretbox_NONCEBYTES))
        guard nonce.count == Int(crypto_secretbox_NONCEBYTES) else {
            throw .malformed(what: "encrypted private key", reason: "nonce must be 24 bytes")
        }
        let derived = try deriveKey(password: password, salt: salt, parameters: parameters)
        var ciphertext = [UInt8](repeating: 0, count: key.pkcs8.count + Int(crypto_secretbox_MACBYTES))
        let m = Array(key.pkcs8)
        let n = Array(nonce)
        let k = Array(derived)
        let status = crypto_secretbox_easy(&ciphertext, m, UInt64(m.count), n, k)
        guard status == 0 else { throw .malformed(what: "encrypted private key", reason: "secretbox failed") }
        let json =
            "{\"kdf\":{\"name\":\"scrypt\","
            + "\"params\":{\"N\":\(parameters.n),\"r\":\(parameters.r),\"p\":\(parameters.p)},"
            + "\"salt\":\"\(salt.base64EncodedString())\"},"
            + "\"cipher\":{\"name\":\"nacl/secretbox\",\"nonce\":\"\(nonce.base64EncodedString())\"},"
            + "\"ciphertext\":\"\(Data(ciphertext).base64EncodedString())\"}"
        let body = Data(json.utf8).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN \(pemLabel)-----\n\(body)\n-----END \(pemLabel)-----\n"
    }

    // MARK: - Primitives

    /// scrypt(password, salt, N, r, p) → the 32-byte secretbox key.
    private static func deriveKey(password: Data, salt: Data, parameters: ScryptParameters)
        throws(VerificationError) -> Data
    {
        try initialize()
        var key = [UInt8](repeating: 0, count: Int(crypto_secretbox_KEYBYTES))
        // libsodium wants non-NULL pointers even for an empty password or salt: pad, and pass the real lengths.
        let pw = Array(password) + [0]
        let s = Array(salt) + [0]
        let status = crypto_pwhash_scryptsalsa208sha256_ll(
            pw, password.count, s, salt.count, UInt64(parameters.n), UInt32(parameters.r), UInt32(parameters.p), &key,
            key.count)
        guard status == 0 else { throw .malformed(what: "encrypted private key", reason: "scrypt failed") }
        return Data(key)
    }

    private static func initialize() throws(VerificationError) {
        // Thread-safe and idempotent: 0 on first success, 1 when already initialised.
        guard sodium_init() >= 0 else { throw .malformed(what: "libsodium", reason: "initialisation failed") }
    }

    private static func random(_ count: Int) -> Data {
        var bytes = [UInt8](repeating: 0, count: count)
        randombytes_buf(&bytes, count)
        return Data(bytes)
    }

    private struct Wire: Decodable {
        struct KDF: Decodable {
            struct Params: Decodable {
                let n: Int
                let r: Int
                let p: Int

                enum CodingKeys: String, CodingKey {
                    case n = "N"
                    case r, p
                }
            }
            let name: String
            let params: Params
            let salt: String
        }
        struct Cipher: Decodable {
            let name: String
            let nonce: String
        }
        let kdf: KDF
        let cipher: Cipher
        let ciphertext: String
    }
}
