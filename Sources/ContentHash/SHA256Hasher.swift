import CDigest
import Foundation
import OCI

/// Incremental SHA-256 over OpenSSL's EVP interface: the one hash mcvfs trusts for content addresses.
public struct SHA256Hasher: ~Copyable {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new(), EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else {
            fatalError("OpenSSL cannot initialise SHA-256")  // only when libcrypto itself is broken
        }
        self.context = context
    }

    deinit { EVP_MD_CTX_free(context) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        EVP_DigestUpdate(context, base, bytes.count)
    }

    public mutating func update(_ data: Data) {
        data.withUnsafeBytes { update($0) }
    }

    /// Ends the hash; the hasher must not be used afterwards.
    public consuming func finalize() -> Digest {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &out, &length)
        return Digest(bytes: out.prefix(Int(length)))
    }

    /// The digest of `data` in one call.
    public static func digest(_ data: Data) -> Digest {
        var hasher = SHA256Hasher()
        hasher.update(data)
        return hasher.finalize()
    }
}

/// A digest check failed: the bytes are not the ones their address names. Never data; an attack or a fault.
public struct DigestMismatch: Error, Equatable, CustomStringConvertible {
    public let expected: Digest
    public let actual: Digest
    public let size: Int64

    public init(expected: Digest, actual: Digest, size: Int64) {
        self.expected = expected
        self.actual = actual
        self.size = size
    }

    public var description: String {
        "digest mismatch: expected \(expected), got \(actual) over \(size) bytes"
    }
}

extension Digest {
    /// Throws `DigestMismatch` unless `data` hashes to this digest.
    public func verify(_ data: Data) throws(DigestMismatch) {
        let actual = SHA256Hasher.digest(data)
        guard actual == self else { throw DigestMismatch(expected: self, actual: actual, size: Int64(data.count)) }
    }
}
