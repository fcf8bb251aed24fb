import ContentHash
import Foundation
import OCI

/// Everything the local blob store can fail with. Associated values carry the evidence.
public enum CacheError: Error, Equatable, CustomStringConvertible {
    /// A system call failed; `errno` as the kernel reported it.
    case io(operation: String, path: String, errno: Int32)
    /// The bytes written hash to `actual`, not to the digest they were ingested under. Nothing was committed.
    case digestMismatch(expected: Digest, actual: Digest, size: Int64)
    /// The producer wrote more, or fewer, bytes than the size the caller (a manifest descriptor) promised.
    /// `actual` is the count at the point the mismatch was seen (the first overflowing total, or the final total).
    case sizeMismatch(digest: Digest?, expected: Int64, actual: Int64)
    /// The blob is not in the store.
    case notFound(Digest)
    /// A cache directory that cannot be used (relative path, or not a directory).
    case invalidCacheDirectory(path: String, reason: String)
    /// Another process held the lock file past the operation's deadline.
    case lockTimeout(path: String)

    public var description: String {
        switch self {
        case .io(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))"
        case .digestMismatch(let expected, let actual, let size):
            return "digest mismatch: expected \(expected), got \(actual) over \(size) bytes; blob not stored"
        case .sizeMismatch(let digest, let expected, let actual):
            let what = digest.map { "blob \($0)" } ?? "blob"
            return "size mismatch for \(what): expected \(expected) bytes, got \(actual); blob not stored"
        case .notFound(let digest):
            return "blob \(digest) is not in the local cache"
        case .invalidCacheDirectory(let path, let reason):
            return "cannot use cache directory '\(path)': \(reason)"
        case .lockTimeout(let path):
            return "lock \(path) still held by another process at the operation's deadline; find the holder with "
                + "`lslocks` or `fuser \(path)` (the cache directory must be 0700 so no other user can open it)"
        }
    }

    /// Wraps the verification module's mismatch, so callers see one error type per module.
    public init(_ mismatch: DigestMismatch) {
        self = .digestMismatch(expected: mismatch.expected, actual: mismatch.actual, size: mismatch.size)
    }
}
