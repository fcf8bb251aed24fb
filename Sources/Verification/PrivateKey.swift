import COpenSSL
import Foundation

/// A signing key, held as DER PKCS#8 (what `cosign.key` encrypts). Used to make signatures cosign verifies.
public struct PrivateKey: Sendable, Hashable {
    /// DER PKCS#8 PrivateKeyInfo.
    public let pkcs8: Data
    public let publicKey: PublicKey

    /// Parses DER PKCS#8.
    /// - Throws: `VerificationError.malformed`.
    public init(pkcs8: Data) throws(VerificationError) {
        let handle = try PrivateKeyHandle(pkcs8: pkcs8)
        self.pkcs8 = pkcs8
        publicKey = try handle.publicKey()
    }

    /// A fresh ECDSA P-256 key, the kind `cosign generate-key-pair` makes.
    public static func generateP256() throws(VerificationError) -> PrivateKey {
        let key = try check(mcvfs_EVP_EC_gen("P-256"), "P-256 key generation")
        let handle = PrivateKeyHandle(owning: key)
        return try PrivateKey(pkcs8: handle.pkcs8())
    }

    /// Signs `message`: ECDSA with an ASN.1 DER signature or RSA PKCS#1 v1.5, over the `hash` digest.
    public func sign(_ message: Data, hash: PublicKey.HashAlgorithm = .sha256) throws(VerificationError) -> Data {
        let handle = try PrivateKeyHandle(pkcs8: pkcs8)
        let digest: OpaquePointer?
        switch (publicKey.algorithm, hash) {
        case (.ed25519, _): digest = nil
        case (_, .sha256): digest = EVP_sha256()
        case (_, .sha384): digest = EVP_sha384()
        case (_, .sha512): digest = EVP_sha512()
        }
        return try handle.sign(message, digest: digest)
    }
}

/// An owned `EVP_PKEY` holding a private key.
final class PrivateKeyHandle {
    let pointer: OpaquePointer

    init(owning pointer: OpaquePointer) { self.pointer = pointer }

    init(pkcs8: Data) throws(VerificationError) {
        let parsed: OpaquePointer? = pkcs8.withUnsafeBytes { raw in
            guard let base = raw.bindMemory(to: UInt8.self).baseAddress else { return nil }
            var cursor: UnsafePointer<UInt8>? = base
            guard let info = d2i_PKCS8_PRIV_KEY_INFO(nil, &cursor, raw.count) else { return nil }
            defer { PKCS8_PRIV_KEY_INFO_free(info) }
            guard cursor == base + raw.count else { return nil }
            return EVP_PKCS82PKEY(info)
        }
        pointer = try check(parsed, "private key (DER PKCS#8)")
    }

    deinit { EVP_PKEY_free(pointer) }

    func pkcs8() throws(VerificationError) -> Data {
        let info = try check(EVP_PKEY2PKCS8(pointer), "private key encoding")
        defer { PKCS8_PRIV_KEY_INFO_free(info) }
        var out: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_PKCS8_PRIV_KEY_INFO(info, &out)
        guard length > 0, let out else { throw .malformed(what: "private key", reason: openSSLErrorText()) }
        defer { mcvfs_OPENSSL_free(out) }
        return Data(bytes: out, count: Int(length))
    }

    func publicKey() throws(VerificationError) -> PublicKey {
        var out: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_PUBKEY(pointer, &out)
        guard length > 0, let out else { throw .malformed(what: "private key", reason: openSSLErrorText()) }
        defer { mcvfs_OPENSSL_free(out) }
        return try PublicKey(spki: Data(bytes: out, count: Int(length)))
    }

    func sign(_ message: Data, digest: OpaquePointer?) throws(VerificationError) -> Data {
        let context = try check(EVP_MD_CTX_new(), "signing context")
        defer { EVP_MD_CTX_free(context) }
        try check(EVP_DigestSignInit(context, nil, digest, nil, pointer), "signing set-up")
        var length = 0
        try check(EVP_DigestSign(context, nil, &length, nil, 0), "signature size")
        var signature = [UInt8](repeating: 0, count: length)
        let status = message.withUnsafeBytes { msg in
            EVP_DigestSign(context, &signature, &length, msg.bindMemory(to: UInt8.self).baseAddress, msg.count)
        }
        try check(status, "signing")
        return Data(signature.prefix(length))
    }
}
