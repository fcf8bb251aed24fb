import COpenSSL
import ContentHash
import Foundation

/// A verification key: ECDSA (P-256, P-384, P-521), RSA or Ed25519, held as its DER SubjectPublicKeyInfo.
///
/// A plain value: the OpenSSL key is rebuilt for each verification, so copies are free to cross threads.
public struct PublicKey: Sendable, Hashable, CustomStringConvertible {
    public enum Algorithm: Sendable, Hashable, CustomStringConvertible {
        case ecdsaP256, ecdsaP384, ecdsaP521
        case rsa(bits: Int)
        case ed25519

        public var description: String {
            switch self {
            case .ecdsaP256: return "ECDSA P-256"
            case .ecdsaP384: return "ECDSA P-384"
            case .ecdsaP521: return "ECDSA P-521"
            case .rsa(let bits): return "RSA-\(bits)"
            case .ed25519: return "Ed25519"
            }
        }
    }

    /// The message digest a signature is computed over. Ed25519 ignores it (the scheme hashes internally).
    public enum HashAlgorithm: Sendable, Hashable {
        case sha256, sha384, sha512
    }

    /// DER SubjectPublicKeyInfo, as OpenSSL re-encodes it (so equal keys have equal bytes).
    public let spki: Data
    public let algorithm: Algorithm

    /// Parses a PEM `PUBLIC KEY` (PKIX SubjectPublicKeyInfo), the format of `cosign.pub`.
    /// - Throws: `VerificationError.malformed` for any other PEM, or a key OpenSSL cannot read.
    public init(pem: String) throws(VerificationError) {
        let blocks = try PEMBlock.parse(pem, what: "public key PEM")
        guard let block = blocks.first else { throw .malformed(what: "public key PEM", reason: "no PEM block") }
        guard block.label == "PUBLIC KEY" else {
            throw .malformed(what: "public key PEM", reason: "expected 'PUBLIC KEY', found '\(block.label)'")
        }
        try self.init(spki: block.der)
    }

    /// Parses a DER SubjectPublicKeyInfo (Sigstore trusted roots carry keys this way).
    public init(spki: Data) throws(VerificationError) {
        try self.init(handle: PKeyHandle(spki: spki))
    }

    /// The subject public key of a certificate.
    public init(certificate: Certificate) {
        self = certificate.publicKey
    }

    init(handle: PKeyHandle) throws(VerificationError) {
        spki = try handle.spki()
        switch EVP_PKEY_get_base_id(handle.pointer) {
        case EVP_PKEY_EC:
            var name = [CChar](repeating: 0, count: 64)
            var length = 0
            try check(EVP_PKEY_get_group_name(handle.pointer, &name, name.count, &length), "EC public key curve")
            switch String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self) {
            case "prime256v1", "P-256": algorithm = .ecdsaP256
            case "secp384r1", "P-384": algorithm = .ecdsaP384
            case "secp521r1", "P-521": algorithm = .ecdsaP521
            case let other: throw .malformed(what: "EC public key", reason: "unsupported curve \(other)")
            }
        case EVP_PKEY_RSA:
            let bits = Int(EVP_PKEY_get_bits(handle.pointer))
            // Go's crypto/rsa refuses keys under 1024 bits for verification; so does mcvfs, with margin.
            guard bits >= 2048 else { throw .malformed(what: "RSA public key", reason: "\(bits)-bit key is too small") }
            algorithm = .rsa(bits: bits)
        case EVP_PKEY_ED25519:
            algorithm = .ed25519
        case let other:
            throw .malformed(what: "public key", reason: "unsupported key type (OpenSSL id \(other))")
        }
    }

    /// Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo: how Rekor names its log (`logID`) and how
    /// mcvfs names a key in reports.
    public var fingerprint: String { SHA256Hasher.digest(spki).hex }

    /// The key as PEM `PUBLIC KEY` (the format of `cosign.pub`), lines of 64 characters.
    public var pem: String {
        let base64 = spki.base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN PUBLIC KEY-----\n\(base64)\n-----END PUBLIC KEY-----\n"
    }

    public var description: String { "\(algorithm) key sha256:\(fingerprint.prefix(16))" }

    /// Checks `signature` over `message`: ASN.1 DER ECDSA or RSA PKCS#1 v1.5 over the `hash` digest, or Ed25519.
    ///
    /// cosign hashes with SHA-256 for every key type (`cosign verify --key` loads verifiers with `crypto.SHA256`,
    /// P-384 included), so that is the default.
    /// - Throws: `VerificationError.badSignature` when it does not verify.
    public func verify(signature: Data, over message: Data, hash: HashAlgorithm = .sha256) throws(VerificationError) {
        guard try isValidSignature(signature, over: message, hash: hash) else {
            throw .badSignature(key: description)
        }
    }

    /// The hash a log or authority signing with this key uses (sigstore's defaults): SHA-256 for P-256 and RSA,
    /// SHA-384 for P-384, SHA-512 for P-521.
    public var naturalHash: HashAlgorithm {
        switch algorithm {
        case .ecdsaP384: return .sha384
        case .ecdsaP521: return .sha512
        default: return .sha256
        }
    }

    /// `true` when `signature` verifies over a message whose SHA-256 digest is `digest` (a message signature over
    /// an artifact known only by its digest). Ed25519 signs the message itself, so it cannot be checked this way.
    public func isValidSignature(_ signature: Data, overSHA256 digest: Data) throws(VerificationError) -> Bool {
        guard algorithm != .ed25519 else {
            throw .malformed(what: "signature", reason: "an Ed25519 signature needs the artifact, not its digest")
        }
        return try PKeyHandle(spki: spki).verify(signature: signature, prehashed: digest, digest: EVP_sha256())
    }

    /// `true` when `signature` verifies over `message`; throws only when the key itself cannot be used.
    public func isValidSignature(_ signature: Data, over message: Data, hash: HashAlgorithm = .sha256)
        throws(VerificationError) -> Bool
    {
        let handle = try PKeyHandle(spki: spki)
        let digest: OpaquePointer?
        switch (algorithm, hash) {
        case (.ed25519, _): digest = nil
        case (_, .sha256): digest = EVP_sha256()
        case (_, .sha384): digest = EVP_sha384()
        case (_, .sha512): digest = EVP_sha512()
        }
        return try handle.verify(signature: signature, message: message, digest: digest)
    }
}
