import BlobCache
import ContentHash
import Foundation
import OCI
import Synchronization
import TestSupport
import Testing

@testable import RemoteLayers

func verified(_ text: String) throws -> VerifiedBlob {
    let data = Data(text.utf8)
    return try VerifiedBlob(data, matching: SHA256Hasher.digest(data))
}

func verified(bytes count: Int, seed: UInt64) throws -> VerifiedBlob {
    let data = noise(count, seed: seed)
    return try VerifiedBlob(data, matching: SHA256Hasher.digest(data))
}

/// A store over a real directory whose batch commits can be made to fail as a full disk does (the one thing a
/// unit test cannot bring about for real).
final class FullDiskStore: BlobStore {
    let base: DirectoryBlobStore
    let full = Mutex(false)

    init(_ base: DirectoryBlobStore) { self.base = base }

    func contains(_ digest: Digest) -> Bool { base.contains(digest) }
    func path(for digest: Digest) -> String? { base.path(for: digest) }
    func size(of digest: Digest) throws -> Int64 { try base.size(of: digest) }
    func open(_ digest: Digest) throws -> BlobHandle { try base.open(digest) }
    func ingest(_ expected: Digest, expectedSize: Int64?, _ produce: (BlobWriter) throws -> Void) throws -> String {
        try base.ingest(expected, expectedSize: expectedSize, produce)
    }
    func ingest(expectedSize: Int64?, _ produce: (BlobWriter) throws -> Void) throws -> StoredBlob {
        try base.ingest(expectedSize: expectedSize, produce)
    }
    func commitBatch(_ blobs: [(expected: Digest, data: Data)]) -> [Digest: Result<String, CacheError>] {
        guard full.withLock({ $0 }) else { return base.commitBatch(blobs) }
        return Dictionary(
            uniqueKeysWithValues: blobs.map {
                ($0.expected, .failure(.io(operation: "write", path: "", errno: ENOSPC)))
            })
    }
    func withIngestLock<R>(_ digest: Digest, _ body: () throws -> R) throws -> R {
        try base.withIngestLock(digest, body)
    }
    func remove(_ digest: Digest) throws -> Bool { try base.remove(digest) }
    func list() throws -> [BlobInfo] { try base.list() }
    func packPath(for layer: Digest) -> String? { base.packPath(for: layer) }
    func createPack(for layer: Digest) throws -> PackWriter { try base.createPack(for: layer) }
}

@Suite struct MemoryBlobCacheStateTests {
    @Test func addCountsBytesOnceAndReportsTheBound() throws {
        var state = MemoryBlobCache.State()
        let a = try verified("aaaa")
        let within = state.add([a, a], maxBytes: 4)
        #expect(!within)
        #expect(state.bytes == 4)
        let over = state.add([try verified("b")], maxBytes: 4)
        #expect(over)
        state.remove([a.digest])
        #expect(state.bytes == 1)
    }

    @Test func shedDropsTheOldestFirst() throws {
        var state = MemoryBlobCache.State()
        let blobs = try (0..<4).map { try verified("blob \($0)") }
        for blob in blobs { _ = state.add([blob], maxBytes: .max) }
        // Only the candidates (what the store could not take) go, oldest first.
        let dropped = state.shed(blobs.dropFirst().map(\.digest).reversed(), to: 2 * blobs[0].data.count)
        #expect(dropped == [blobs[1].digest, blobs[2].digest])
        #expect(state.entries.keys.sorted() == [blobs[0].digest, blobs[3].digest].sorted())
        #expect(state.shed(blobs.map(\.digest), to: .max).isEmpty)
    }
}

@Suite struct MemoryBlobCacheTests {
    let directory: TemporaryDirectory
    let store: DirectoryBlobStore

    init() throws {
        directory = try TemporaryDirectory()
        store = try DirectoryBlobStore(root: directory.url)
    }

    @Test func addedBytesAreReadableAtOnceAndCommitStoresThem() throws {
        let cache = MemoryBlobCache(store: store, commitDelay: .seconds(3600))
        let blobs = try [verified("metadata"), verified("binary")]
        cache.add(blobs, commit: .withNext)
        for blob in blobs {
            #expect(cache.data(blob.digest) == blob.data)
            #expect(!store.contains(blob.digest))
        }
        cache.commit()
        for blob in blobs {
            #expect(store.contains(blob.digest))
            #expect(cache.data(blob.digest) == nil)
        }
        #expect(cache.heldBytes == 0)
    }

    @Test func abortDropsUnstored() throws {
        let cache = MemoryBlobCache(store: store, commitDelay: .seconds(3600))
        let kept = try verified("kept")
        let dropped = try verified("dropped")
        cache.add([kept, dropped], commit: .withNext)
        cache.abort([dropped.digest])
        #expect(cache.data(dropped.digest) == nil)
        cache.commit()
        #expect(store.contains(kept.digest))
        #expect(!store.contains(dropped.digest))
    }

    @Test func soonCommitsInTheBackground() throws {
        let cache = MemoryBlobCache(store: store, commitDelay: .milliseconds(20))
        let later = try verified("listing metadata")
        cache.add([later], commit: .withNext)
        let soon = try verified("a kernel's binary")
        cache.add([soon], commit: .soon)
        // The timer's commit takes everything held, what waited for the next commit included.
        #expect(eventually { cache.heldBytes == 0 })
        #expect(store.contains(soon.digest) && store.contains(later.digest))
    }

    @Test func passingTheBoundCommitsOnTheAddingThread() throws {
        let cache = MemoryBlobCache(store: store, maxBytes: 1000, commitDelay: .seconds(3600))
        let small = try verified(bytes: 600, seed: 1)
        cache.add([small], commit: .withNext)
        #expect(cache.heldBytes == 600)
        let more = try verified(bytes: 600, seed: 2)
        cache.add([more], commit: .withNext)
        // Returned only once both were stored: memory is back to nothing held.
        #expect(store.contains(small.digest) && store.contains(more.digest))
        #expect(cache.heldBytes == 0)
    }

    @Test func aFullDiskKeepsWhatFitsAndAbortsTheOldest() throws {
        let full = FullDiskStore(store)
        full.full.withLock { $0 = true }
        let cache = MemoryBlobCache(store: full, maxBytes: 1000, commitDelay: .seconds(3600))
        let blobs = try (0..<5).map { try verified(bytes: 300, seed: UInt64($0)) }
        for blob in blobs { cache.add([blob], commit: .withNext) }
        // Never more than the bound held; the newest stay readable, the oldest will be fetched again.
        #expect(cache.heldBytes <= 1000)
        #expect(cache.data(blobs[4].digest) == blobs[4].data)
        #expect(cache.data(blobs[0].digest) == nil)
        full.full.withLock { $0 = false }
        cache.commit()
        #expect(store.contains(blobs[4].digest))
        #expect(cache.heldBytes == 0)
    }

    @Test func concurrentAddsAndCommitsLoseNothing() throws {
        let cache = MemoryBlobCache(store: store, maxBytes: 4000, commitDelay: .milliseconds(5))
        let blobs = try (0..<64).map { try verified(bytes: 500, seed: UInt64($0)) }
        concurrently(64) { i in
            cache.add([blobs[i]], commit: .soon)
            if i % 8 == 0 { cache.commit() }
        }
        cache.commit()
        #expect(blobs.allSatisfy { store.contains($0.digest) })
        #expect(cache.heldBytes == 0)
    }
}
