import Foundation
import OCI
import Verification

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The sink a producer writes a blob's bytes into during `BlobStore.ingest`. Bytes are hashed as they are
/// written and the promised size is enforced on every write, so an over-long stream fails as soon as it
/// overflows rather than after filling the disk.
///
/// Only valid inside the producer closure it is passed to; not `Sendable` (one producer, one thread).
public final class BlobWriter {
    let fd: Int32
    let path: String
    let expectedDigest: Digest?
    /// The size the caller promised, when it knows one.
    public let expectedSize: Int64?
    /// Bytes accepted so far.
    public private(set) var bytesWritten: Int64 = 0
    private var hasher: SHA256Hasher? = SHA256Hasher()

    init(fd: Int32, path: String, expectedDigest: Digest?, expectedSize: Int64?) {
        self.fd = fd
        self.path = path
        self.expectedDigest = expectedDigest
        self.expectedSize = expectedSize
    }

    /// Appends `bytes` to the blob.
    /// - Throws: `CacheError.sizeMismatch` when the total would exceed the expected size; `CacheError.io` on a
    ///   write failure (`ENOSPC`).
    public func write(_ bytes: UnsafeRawBufferPointer) throws(CacheError) {
        guard !bytes.isEmpty else { return }
        let total = bytesWritten + Int64(bytes.count)
        if let expectedSize, total > expectedSize {
            throw CacheError.sizeMismatch(digest: expectedDigest, expected: expectedSize, actual: total)
        }
        try writeAll(fd, bytes, path: path)
        hasher!.update(bytes)
        bytesWritten = total
    }

    /// Appends `data` to the blob.
    public func write(_ data: Data) throws(CacheError) {
        do {
            try data.withUnsafeBytes { try write($0) }
        } catch {
            throw error as! CacheError  // write(_:) throws nothing else; withUnsafeBytes erases the type
        }
    }

    /// Ends hashing; called once by the store after the producer returned.
    func finish() -> Digest {
        hasher.take()!.finalize()
    }
}
