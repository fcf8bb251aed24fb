import Foundation
import OCI

/// A blob committed to a store: its address, its size and where its bytes are.
public struct StoredBlob: Sendable, Hashable {
    public var digest: Digest
    public var size: Int64
    /// Absolute path of the committed file; stable until the blob is removed.
    public var path: String

    public init(digest: Digest, size: Int64, path: String) {
        self.digest = digest
        self.size = size
        self.path = path
    }
}

/// One entry of `BlobStore.list()`: what eviction needs to know.
public struct BlobInfo: Sendable, Hashable {
    public var digest: Digest
    public var size: Int64
    /// Last access time as the file system records it (subject to `relatime`; `touch(_:)` updates it explicitly).
    public var lastAccess: Date

    public init(digest: Digest, size: Int64, lastAccess: Date) {
        self.digest = digest
        self.size = size
        self.lastAccess = lastAccess
    }
}

/// A local content-addressed store of verified blobs. Every committed blob's bytes hash to its digest:
/// implementations verify inside ingest, before anything becomes visible.
///
/// All methods are synchronous and safe to call from any thread (callers are libfuse worker threads).
public protocol BlobStore: Sendable {
    /// True when the blob is committed.
    func contains(_ digest: Digest) -> Bool
    /// The local file holding the blob's bytes, when committed.
    func path(for digest: Digest) -> String?
    /// The committed blob's size. - Throws: `CacheError.notFound`.
    func size(of digest: Digest) throws -> Int64
    /// Opens the committed blob for positional reads. - Throws: `CacheError.notFound`.
    func open(_ digest: Digest) throws -> BlobHandle

    /// Stores the bytes `produce` writes as blob `expected`, committing only when they hash to it (and, when
    /// given, are exactly `expectedSize` long). On any throw nothing is committed and no temp file remains.
    /// - Returns: the committed file's path.
    /// - Throws: `CacheError.digestMismatch`, `CacheError.sizeMismatch`, `CacheError.io`, or what `produce` throws.
    func ingest(_ expected: Digest, expectedSize: Int64?, _ produce: (BlobWriter) throws -> Void) throws -> String

    /// Stores the bytes `produce` writes under the digest they hash to (content addressed by construction).
    func ingest(expectedSize: Int64?, _ produce: (BlobWriter) throws -> Void) throws -> StoredBlob

    /// Commits many small blobs held in memory, each verified against its expected digest; one failing does not
    /// stop the others. Implementations may share one sync among them.
    /// - Returns: for each expected digest, its path or why it was not committed.
    func commitBatch(_ blobs: [(expected: Digest, data: Data)]) -> [Digest: Result<String, CacheError>]

    /// Runs `body` holding the store-wide, cross-process lock for `digest`. A caller that checks `contains`
    /// inside the lock downloads each blob once even when several processes want it at the same time.
    func withIngestLock<R>(_ digest: Digest, _ body: () throws -> R) throws -> R

    /// Removes the blob, and the pack unpacked from it when it is a layer; false when neither was there. Open
    /// handles keep reading the removed bytes.
    @discardableResult func remove(_ digest: Digest) throws -> Bool
    /// Every committed blob, and every pack (listed under its layer's digest).
    func list() throws -> [BlobInfo]

    /// The committed pack of `layer`: its file contents unpacked back to back (`PackWriter`).
    func packPath(for layer: Digest) -> String?
    /// Starts writing the pack of `layer`; nothing is visible until `PackWriter.commit`.
    func createPack(for layer: Digest) throws -> PackWriter
}

extension BlobStore {
    /// One `ingest` per blob.
    public func commitBatch(_ blobs: [(expected: Digest, data: Data)]) -> [Digest: Result<String, CacheError>] {
        var results: [Digest: Result<String, CacheError>] = [:]
        for (expected, data) in blobs {
            do { results[expected] = .success(try ingest(data: data, expected: expected).path) } catch {
                results[expected] = .failure(error as? CacheError ?? .io(operation: "ingest", path: "", errno: EIO))
            }
        }
        return results
    }

    /// Returns the blob's path, running `produce` (under the ingest lock) only when no process has it yet.
    /// - Throws: as `ingest(_:expectedSize:_:)`.
    public func ensure(
        _ digest: Digest, expectedSize: Int64?, _ produce: (BlobWriter) throws -> Void
    ) throws -> String {
        if let path = path(for: digest) { return path }
        return try withIngestLock(digest) {
            if let path = path(for: digest) { return path }  // another process finished while we waited
            return try ingest(digest, expectedSize: expectedSize, produce)
        }
    }

    /// Stores `data`, verifying it against `expected` when given.
    @discardableResult
    public func ingest(data: Data, expected: Digest? = nil) throws -> StoredBlob {
        if let expected {
            let path = try ingest(expected, expectedSize: Int64(data.count)) { try $0.write(data) }
            return StoredBlob(digest: expected, size: Int64(data.count), path: path)
        }
        return try ingest(expectedSize: Int64(data.count)) { try $0.write(data) }
    }

    /// Sum of the sizes of all committed blobs.
    public func totalSize() throws -> Int64 {
        try list().reduce(0) { $0 + $1.size }
    }

    /// Reads up to `count` bytes at `offset` of a committed blob.
    public func read(_ digest: Digest, offset: Int64, count: Int) throws -> Data {
        try open(digest).read(offset: offset, count: count)
    }
}
