import BlobCache
import ContentHash
import Foundation
import OCI
import Registry
import Synchronization
import Verification

/// The signature artifacts a verification read from the registry, kept under the cache directory so a node can
/// re-verify them while the registry is unreachable:
///
///     <cache-dir>/signatures/blobs/sha256/<hex>     manifests, configs, payloads and bundles, content-addressed
///     <cache-dir>/signatures/images/sha256/<hex>.json   per image digest: what the registry answered, by name
///
/// A record says which manifest each signature tag named (or that there was none) and which referrers the image
/// had; everything it points at is a blob, read back and hashed again before use, so a record or blob altered on
/// disk can only make a signature fail. The store is separate from the layer cache, so evicting layers never
/// takes the signatures of what is still cached.
public struct SignatureStore: Sendable {
    /// What the registry answered for one image digest.
    struct Record: Codable, Equatable {
        var digest: Digest
        /// Tag → the manifest digest it named; `nil`: the tag did not exist.
        var tags: [String: Digest?]
        var referrers: [Descriptor]
        var savedAt: Date
    }

    private let blobs: DirectoryBlobStore
    private let records: String

    /// Opens (creating) the store in the cache directory's `signatures/`.
    public init(layout: CacheLayout) throws {
        let root = URL(fileURLWithPath: layout.signatures)
        blobs = try DirectoryBlobStore(root: root)
        records = root.appendingPathComponent("images/sha256").path
        try AtomicFile.makeDirectory(records)
    }

    /// Keeps what `recording` read for `digest`, replacing the previous record.
    func save(_ recording: RecordingSource.Recording, for digest: Digest) throws {
        for (blobDigest, data) in recording.blobs.sorted(by: { $0.key < $1.key }) where !blobs.contains(blobDigest) {
            try blobs.ingest(data: data, expected: blobDigest)
        }
        let record = Record(
            digest: digest, tags: recording.tags, referrers: recording.referrers[digest] ?? [], savedAt: Date())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try AtomicFile.write(try encoder.encode(record), to: recordPath(digest))
    }

    /// The stored artifacts for `digest` as a source, or `nil` when none were ever stored.
    /// - Throws: `VerificationError.malformed` when the record cannot be read (nothing of it is then trusted).
    func source(for digest: Digest) throws -> StoredSignatureSource? {
        guard let data = FileManager.default.contents(atPath: recordPath(digest)) else { return nil }
        guard let record = try? JSONDecoder().decode(Record.self, from: data), record.digest == digest else {
            throw VerificationError.malformed(what: "stored signature record for \(digest.short)", reason: "unreadable")
        }
        return StoredSignatureSource(blobs: blobs, record: record)
    }

    private func recordPath(_ digest: Digest) -> String { "\(records)/\(digest.hex).json" }
}

/// A source over what a `SignatureStore` kept for one image.
struct StoredSignatureSource: SignatureSource {
    let blobs: DirectoryBlobStore
    let record: SignatureStore.Record

    func manifest(_ reference: String, limit: Int) throws -> FetchedManifest? {
        let digest: Digest
        if let named = try? Digest(parsing: reference) {
            digest = named
        } else {
            guard let tagged = record.tags[reference], let named = tagged else { return nil }
            digest = named
        }
        let data = try blob(digest, limit: limit)
        let document = try ManifestDocument(parsing: data)
        let mediaType: String
        switch document {
        case .manifest(let manifest): mediaType = manifest.mediaType ?? MediaType.ociManifest
        case .index(let index): mediaType = index.mediaType ?? MediaType.ociIndex
        }
        return FetchedManifest(digest: digest, mediaType: mediaType, data: data, document: document)
    }

    func blob(_ digest: Digest, limit: Int) throws -> Data {
        let what = "stored signature artifact \(digest.short)"
        let data: Data
        do {
            let size = try blobs.size(of: digest)
            guard size <= Int64(limit) else {
                throw VerificationError.malformed(what: what, reason: "\(size) bytes (at most \(limit) are read)")
            }
            data = try blobs.read(digest, offset: 0, count: Int(size))
        } catch let error as VerificationError {
            throw error
        } catch {
            throw VerificationError.malformed(what: what, reason: "\(error)")
        }
        // The blob store verified it when it was written; a file changed since must not count.
        guard SHA256Hasher.digest(data) == digest else {
            throw VerificationError.malformed(
                what: "stored signature artifact \(digest.short)", reason: "it was altered on disk")
        }
        return data
    }

    func referrers(of digest: Digest) throws -> [Descriptor] {
        digest == record.digest ? record.referrers : []
    }
}

/// Reads through another source and remembers what it answered, so the answer can be stored. It holds only what
/// its reader asked for: a `SignatureFinder`'s reads, within its `SignatureLimits`.
final class RecordingSource: SignatureSource {
    struct Recording: Sendable {
        var tags: [String: Digest?] = [:]
        var referrers: [Digest: [Descriptor]] = [:]
        var blobs: [Digest: Data] = [:]
    }

    private let inner: any SignatureSource
    private let state = Mutex(Recording())

    init(_ inner: any SignatureSource) { self.inner = inner }

    var recording: Recording { state.withLock { $0 } }

    func manifest(_ reference: String, limit: Int) throws -> FetchedManifest? {
        let fetched = try inner.manifest(reference, limit: limit)
        state.withLock { recording in
            if (try? Digest(parsing: reference)) == nil { recording.tags[reference] = .some(fetched?.digest) }
            if let fetched { recording.blobs[fetched.digest] = fetched.data }
        }
        return fetched
    }

    func blob(_ digest: Digest, limit: Int) throws -> Data {
        let data = try inner.blob(digest, limit: limit)
        state.withLock { $0.blobs[digest] = data }
        return data
    }

    func referrers(of digest: Digest) throws -> [Descriptor] {
        let found = try inner.referrers(of: digest)
        state.withLock { $0.referrers[digest] = found }
        return found
    }
}
