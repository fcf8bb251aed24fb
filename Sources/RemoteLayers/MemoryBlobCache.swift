import BlobCache
import Dispatch
import Foundation
import OCI
import Synchronization

/// Verified file bytes held in memory in front of the blob store, so that no file creation or filesystem sync
/// stands on a first read's path: `add` makes bytes readable at once, `commit` stores everything held in one batch
/// (one filesystem sync) and lets it go, `abort` drops bytes unstored (they are fetched and verified again if read).
///
/// Bytes added with `.soon` are committed `commitDelay` later, in the background, so that the files a process opens
/// together share one commit; bytes added with `.withNext` wait for the next commit (a listing's metadata, stored
/// once the first kernels are served). The memory held is bounded: an `add` that takes it past `maxBytes` commits
/// on the adding thread (the producer pays, so a background fetch cannot outrun the disk), and when the store
/// refuses bytes (a full disk) the oldest are aborted until the rest fit.
final class MemoryBlobCache: Sendable {
    enum Commit: Sendable {
        /// In the background, `commitDelay` after the add.
        case soon
        /// With the next commit, whatever triggers it.
        case withNext
    }

    struct State {
        struct Entry {
            var blob: VerifiedBlob
            /// Insertion order: the oldest are aborted first.
            var sequence: Int
        }
        var entries: [Digest: Entry] = [:]
        var bytes = 0
        var nextSequence = 0
        var commitScheduled = false

        /// Holds `blobs` (a digest already held keeps its bytes); returns whether the bound is now exceeded.
        mutating func add(_ blobs: [VerifiedBlob], maxBytes: Int) -> Bool {
            for blob in blobs where entries[blob.digest] == nil {
                entries[blob.digest] = Entry(blob: blob, sequence: nextSequence)
                nextSequence += 1
                bytes += blob.data.count
            }
            return bytes > maxBytes
        }

        /// Drops `digests` (committed, or aborted).
        mutating func remove(_ digests: some Sequence<Digest>) {
            for digest in digests {
                if let entry = entries.removeValue(forKey: digest) { bytes -= entry.blob.data.count }
            }
        }

        /// Drops the oldest of `candidates` until `maxBytes` holds (or none is left); returns what it dropped.
        mutating func shed(_ candidates: some Sequence<Digest>, to maxBytes: Int) -> [Digest] {
            guard bytes > maxBytes else { return [] }
            let oldestFirst = candidates.compactMap { digest in entries[digest].map { (digest, $0.sequence) } }
                .sorted { $0.1 < $1.1 }
            var dropped: [Digest] = []
            for (digest, _) in oldestFirst where bytes > maxBytes {
                dropped.append(digest)
                remove(CollectionOfOne(digest))
            }
            return dropped
        }
    }

    /// Fetched files wait this long in memory, so that the files a process opens together share one commit.
    static let defaultCommitDelay = DispatchTimeInterval.milliseconds(500)
    /// Enough for every kernel's metadata of a few-thousand-kernel image and the directories being read.
    static let defaultMaxBytes = 256 << 20

    let maxBytes: Int
    private let store: any BlobStore
    private let commitDelay: DispatchTimeInterval
    // Lock order: `committing`, then `state`. `committing` is held across a commit's disk writes and sync (never
    // across network I/O), so commits run one at a time and a caller of `commit` returns once what it saw held is
    // stored; `state` is held only for dictionary updates, so reads never wait for the disk.
    private let committing = Mutex(())
    private let state = Mutex(State())

    init(
        store: any BlobStore, maxBytes: Int = defaultMaxBytes, commitDelay: DispatchTimeInterval = defaultCommitDelay
    ) {
        self.store = store
        self.maxBytes = maxBytes
        self.commitDelay = commitDelay
    }

    /// The bytes held for `digest`, if any.
    func data(_ digest: Digest) -> Data? { state.withLock { $0.entries[digest]?.blob.data } }

    /// The verified bytes of `digest` from memory, else from the store (read and checked again), else nil.
    func blob(_ digest: Digest) -> VerifiedBlob? {
        if let held = state.withLock({ $0.entries[digest]?.blob }) { return held }
        guard let path = store.path(for: digest), let data = FileManager.default.contents(atPath: path) else {
            return nil
        }
        return try? VerifiedBlob(data, matching: digest)
    }

    /// Bytes held now.
    var heldBytes: Int { state.withLock { $0.bytes } }

    /// Holds `blobs`, readable at once, and arranges their commit.
    func add(_ blobs: [VerifiedBlob], commit timing: Commit) {
        guard !blobs.isEmpty else { return }
        let (over, schedule) = state.withLock { state in
            let over = state.add(blobs, maxBytes: maxBytes)
            let schedule = timing == .soon && !state.commitScheduled
            if schedule { state.commitScheduled = true }
            return (over, schedule)
        }
        if over {
            commit()
        } else if schedule {
            DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + commitDelay) { [self] in
                state.withLock { $0.commitScheduled = false }
                commit()
            }
        }
    }

    /// Stores everything held (one batch, one filesystem sync) and lets go of what the store took. Bytes the store
    /// refuses as not matching their digest are aborted; bytes it could not write (I/O, a full disk) stay held for
    /// the next commit, unless that breaks the bound: then the oldest of them are aborted. (Bytes added while the
    /// batch was written are not candidates: their adders commit them next.)
    func commit() {
        committing.withLock { _ in
            let pending = state.withLock { state in state.entries.map { (expected: $0.key, data: $0.value.blob.data) } }
            guard !pending.isEmpty else { return }
            let results = store.commitBatch(pending)
            var done: [Digest] = []
            var unwritten: [Digest] = []
            for (digest, result) in results {
                switch result {
                case .success, .failure(.digestMismatch), .failure(.sizeMismatch): done.append(digest)
                case .failure: unwritten.append(digest)
                }
            }
            state.withLock { state in
                state.remove(done)
                _ = state.shed(unwritten, to: maxBytes)
            }
        }
    }

    /// Drops `digests` without storing them.
    func abort(_ digests: some Sequence<Digest>) {
        state.withLock { $0.remove(digests) }
    }
}
