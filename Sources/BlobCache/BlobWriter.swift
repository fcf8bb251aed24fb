import ContentHash
import Foundation
import OCI

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
/// Other `BlobStore` implementations (in-memory test doubles) create one over their own sink and call `finish()`.
public final class BlobWriter {
    /// Where accepted bytes go, after the size check and before hashing.
    public typealias Sink = (UnsafeRawBufferPointer) throws(CacheError) -> Void

    private let sink: Sink
    /// The digest the bytes are promised to have, when known (reported in size errors).
    public let expectedDigest: Digest?
    /// The size the caller promised, when it knows one.
    public let expectedSize: Int64?
    /// Bytes accepted so far.
    public private(set) var bytesWritten: Int64 = 0
    private var hasher: SHA256Hasher? = SHA256Hasher()

    /// A writer passing accepted bytes to `sink`.
    public init(expectedDigest: Digest?, expectedSize: Int64?, sink: @escaping Sink) {
        self.sink = sink
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
        try sink(bytes)
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

    /// Ends hashing and returns the digest of everything written; call once, after the producer returned.
    /// The store then compares it (and `bytesWritten`) with what was expected.
    public func finish() -> Digest {
        hasher.take()!.finalize()
    }
}
