import Foundation
import OCI

#if canImport(Glibc)
    import Glibc
#endif

/// A blob being ingested whose commit its writer times: bytes go in through `writer` (hashed and size-checked as
/// they arrive), `commit` checks them against the digest and size expected and makes them durable under their
/// digest (the commit protocol of `DirectoryBlobStore`), `abort` or the last reference going drops them. This is
/// how a layer downloaded while it is unpacked is kept without its sync on the path of the first reads.
///
/// One owner at a time (the producer writes, then hands it on to commit). Not for concurrent use.
public final class PendingBlob: @unchecked Sendable {
    public let writer: BlobWriter
    private let store: DirectoryBlobStore
    private let expected: Digest?
    private let fd: Int32
    private let temp: String
    private var finished = false

    init(store: DirectoryBlobStore, expected: Digest?, expectedSize: Int64?) throws(CacheError) {
        let (fd, temp) = try store.createTemp(label: expected?.hex ?? "content")
        self.store = store
        self.expected = expected
        self.fd = fd
        self.temp = temp
        self.writer = BlobWriter(expectedDigest: expected, expectedSize: expectedSize) { bytes throws(CacheError) in
            try writeAll(fd, bytes, path: temp)
        }
    }

    deinit {
        if !finished { unlink(temp) }  // while still holding its flock, so the cleaner never races us
        close(fd)
    }

    /// Checks that the bytes written so far are all that was expected (a longer blob already failed its write);
    /// `commit` checks it too. For a caller that uses the bytes before it commits them.
    /// - Throws: `CacheError.sizeMismatch`.
    public func checkSize() throws(CacheError) {
        if let expectedSize = writer.expectedSize, writer.bytesWritten != expectedSize {
            throw CacheError.sizeMismatch(digest: expected, expected: expectedSize, actual: writer.bytesWritten)
        }
    }

    /// Verifies what was written and commits it; an identical blob already committed is kept instead.
    /// - Throws: `CacheError.sizeMismatch`, `.digestMismatch` (nothing is committed then), `.io`.
    public func commit() throws(CacheError) -> StoredBlob {
        guard !finished else { throw CacheError.io(operation: "commit", path: temp, errno: EBADF) }
        defer { if !finished { abort() } }
        let actual = writer.finish()
        let size = writer.bytesWritten
        try checkSize()
        if let expected, actual != expected {
            throw CacheError.digestMismatch(expected: expected, actual: actual, size: size)
        }
        let final = store.blobPath(actual)
        if access(final, F_OK) == 0 {
            // Same bytes already committed (content addressing): keep the existing file, discard ours.
            abort()
            return StoredBlob(digest: actual, size: size, path: final)
        }
        try check(fchmod(fd, 0o444), "fchmod", temp)
        try check(retryingEINTR { fsync(fd) }, "fsync", temp)
        try check(rename(temp, final), "rename", temp)
        finished = true
        try syncDirectory(store.blobsDirectory)
        return StoredBlob(digest: actual, size: size, path: final)
    }

    /// Drops what was written. Idempotent.
    public func abort() {
        guard !finished else { return }
        finished = true
        unlink(temp)
    }
}

extension DirectoryBlobStore {
    /// Starts ingesting a blob the caller commits when it chooses (`PendingBlob`).
    public func beginIngest(_ expected: Digest?, expectedSize: Int64?) throws(CacheError) -> PendingBlob {
        try PendingBlob(store: self, expected: expected, expectedSize: expectedSize)
    }
}
