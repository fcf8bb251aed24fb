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
