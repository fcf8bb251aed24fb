import BlobCache
import Dispatch
import Foundation
import LayerArchive
import OCI
import Synchronization

/// What a mount fetches of its eStargz layers ahead of use (`mount --prefetch`).
public struct PrefetchPolicy: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        /// Only what is read, when it is read.
        case none
        /// A layer's prioritized entries (its hot set, before the `.prefetch.landmark`) once it is indexed (at
        /// its first lookup).
        case hot
        /// The hot set, then the rest of the layer in the background, both from its index on (a mount loads its
        /// images at mount time in this mode, so fetching starts then).
        case all
    }

    public var mode: Mode
    /// Bytes the cache may still take (its `--cache-max-size` less what it holds), asked once per layer before its
    /// background prefetch; nil when unbounded.
    public var room: @Sendable () -> Int64?

    public init(mode: Mode, room: @escaping @Sendable () -> Int64? = { nil }) {
        self.mode = mode
        self.room = room
    }
}

/// Fetches eStargz layers ahead of use, below on-demand reads.
///
/// **Hot region.** Once a layer is indexed (from its TOC), the files before its prefetch landmark (and, with `.all`,
/// the metadata the tree resolution reads) are fetched with one request per `LayerBlobReader.maxSpan` of them, all
/// sent at once, as on-demand reads: a lookup of one of them joins that flight instead of fetching it again.
///
/// **The rest.** Then (`.all`), once the hot region is in flight, the files not local yet are fetched in the
/// background, in offset order, a `batchBytes` span at a time, as background reads: they leave out what on-demand
/// reads are fetching, and an on-demand read waits for one only when it holds a file the read needs (joined, not
/// fetched twice). Each file is verified against the TOC, then appended to
/// the layer's pack (so a whole layer costs one file, not one blob per file), which is mapped and served after each
/// batch and committed, with the layer's index naming what it holds, at the end. Memory holds two batches; the pack
/// stops growing when the cache has no room left. Files of several members are left to on-demand reads.
final class LayerPrefetcher: Sendable {
    static let batchBytes: Int64 = 8 << 20
    /// Batches in flight at once: memory holds at most this many.
    static let workers = 2

    struct State {
        /// Layers whose hot region was started (once each), with the flights of that region: left once all of its
        /// files are in flight.
        var hot: [Digest: DispatchGroup] = [:]
        /// Layers whose rest was started (once each).
        var rest: Set<Digest> = []
    }

    private let policy: PrefetchPolicy
    private let reader: VerifyingReader
    private let files: RemoteFileMap
    private let memory: MemoryBlobCache
    private let packs: PackedLayers
    private let store: DirectoryBlobStore
    /// Persists a layer's index (now naming its pack's contents).
    private let persist: @Sendable (LayerIndex) throws -> Void
    private let metrics: FetchMetrics
    private let state = Mutex(State())
    /// Prefetches running (`waitUntilIdle`).
    private let running = DispatchGroup()

    init(
        policy: PrefetchPolicy, reader: VerifyingReader, files: RemoteFileMap, memory: MemoryBlobCache,
        packs: PackedLayers, store: DirectoryBlobStore, metrics: FetchMetrics,
        persist: @escaping @Sendable (LayerIndex) throws -> Void
    ) {
        self.policy = policy
        self.reader = reader
        self.files = files
        self.memory = memory
        self.packs = packs
        self.store = store
        self.persist = persist
        self.metrics = metrics
    }

    /// Starts fetching `index`'s hot region (with `metadata`), once per layer (no-op without either, or with
    /// `--prefetch none`).
    private func fetchHotRegion(of index: LayerIndex, layer: Descriptor, with metadata: Set<Digest>) {
        let end = index.remote?.prefetchEnd ?? 0
        guard policy.mode != .none, end > 0 || !metadata.isEmpty else { return }
        let claims = DispatchGroup()
        claims.enter()
        let first = state.withLock { state -> Bool in
            guard state.hot[layer.digest] == nil else { return false }
            state.hot[layer.digest] = claims
            return true
        }
        guard first else { return }
        background { [self] in
            let region = end > 0 ? files.files(of: layer.digest, within: 0..<end) : []
            let scattered =
                metadata.isEmpty ? [] : files.files(of: layer.digest).filter { metadata.contains($0.content) }
            let hot = Array(Set(region + scattered)).filter { !isLocal($0.content) }
            let batches = Self.batches(hot, limit: LayerBlobReader.maxSpan)
            for _ in batches { claims.enter() }
            claims.leave()
            DispatchQueue.concurrentPerform(iterations: batches.count) { i in
                _ = reader.files(batches[i], priority: .onDemand, commit: .soon, claimed: { claims.leave() })
            }
        }
    }

    /// Waits until the files of `layer`'s hot region are in flight (so that an on-demand read of one joins its
    /// flight instead of fetching its directory again); at once for a layer without one.
    func awaitHotClaims(of layer: Digest) {
        state.withLock { $0.hot[layer] }?.wait()
    }

    /// Starts fetching the hot region of `index`, then (`.all`) the rest of the layer in the background; each
    /// once per layer.
    func start(_ index: LayerIndex, layer: Descriptor) {
        // With everything prefetched, the tree's metadata (kernel metadata, group files) goes with the hot region,
        // wherever the layer's writer put it: a listing of the root, likely while the rest is in flight, joins
        // these flights instead of fetching it again beside the rest.
        let metadata =
            policy.mode == .all
            ? Set(index.entries.lazy.filter { EStargzWriter.isTreeMetadata($0.path) }.compactMap(\.content)) : []
        fetchHotRegion(of: index, layer: layer, with: metadata)
        guard policy.mode == .all, state.withLock({ $0.rest.insert(layer.digest).inserted }) else { return }
        background { [self] in
            // The hot region first: its files, in flight as on-demand reads, are left out of the rest.
            awaitHotClaims(of: layer.digest)
            fetchRest(of: layer, index: index)
        }
    }

    /// Waits for every prefetch started so far.
    func waitUntilIdle() { running.wait() }

    private func background(_ work: @escaping @Sendable () -> Void) {
        running.enter()
        DispatchQueue.global(qos: .utility).async { [running] in
            defer { running.leave() }
            work()
        }
    }

    private func isLocal(_ content: Digest) -> Bool {
        packs.pack(holding: content) != nil || memory.data(content) != nil || store.path(for: content) != nil
    }

    private func fetchRest(of layer: Descriptor, index: LayerIndex) {
        let pending = files.files(of: layer.digest).filter { !isLocal($0.content) }
        guard !pending.isEmpty, let pack = try? store.createPack(for: layer.digest) else { return }
        // A pack an earlier mount left is carried over whole (its offsets stay), then grows.
        var carried: [Digest: Int64] = [:]
        if let earlier = packs.pack(of: layer.digest) {
            do { try pack.append(earlier.file.bytes) } catch { return }
            carried = earlier.layout.offsets
        }
        // `workers` batches are fetched and verified at once, so one batch's round trip and transfer overlap the
        // inflating and hashing of another; their files are appended to the pack one batch at a time.
        let work = Self.batches(pending, limit: Self.batchBytes, room: policy.room())
        let appended = Mutex((offsets: carried, failed: false))
        let next = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: min(Self.workers, work.count)) { _ in
            while true {
                let i = next.add(1, ordering: .relaxed).oldValue
                guard i < work.count, !appended.withLock({ $0.failed }) else { return }
                // What on-demand reads fetched meanwhile is not fetched again.
                let wanted = work[i].filter { !isLocal($0.content) }
                // Appended and served before the batch's flights land: an on-demand read of one of its files joins
                // the flight or finds the file in the pack, never fetches it again in between.
                _ = reader.files(
                    wanted, priority: .background, commit: nil,
                    keep: { [self] fetched in
                        appended.withLock { state in
                            guard !state.failed else { return }
                            for (content, outcome) in fetched {
                                guard case .success(let blob) = outcome, state.offsets[content] == nil else { continue }
                                let start = pack.size
                                do { try blob.data.withUnsafeBytes { try pack.append($0) } } catch {
                                    metrics.failed(error, verification: false)
                                    state.failed = true
                                    return
                                }
                                state.offsets[content] = start
                            }
                            publish(pack, offsets: state.offsets, index: index)
                        }
                    })
            }
        }
        let (offsets, failed) = appended.withLock { ($0.offsets, $0.failed) }
        guard !failed, !offsets.isEmpty else { return }
        do {
            _ = try pack.commit()
            var saved = index
            saved.pack = PackLayout(size: pack.size, offsets: offsets)
            try persist(saved)
        } catch {
            metrics.failed(error, verification: false)
        }
    }

    /// `batches(_:limit:)`, each cut to what the cache has room for (`room` bytes of files, nil: unbounded; the pack
    /// holds files, not their members); the batches stop where the room ends.
    static func batches(_ files: [RemoteFile], limit: Int64, room: Int64?) -> [[RemoteFile]] {
        var left = room
        var planned: [[RemoteFile]] = []
        for var batch in batches(files, limit: limit) {
            if let bound = left {
                var taken: Int64 = 0
                batch = Array(
                    batch.prefix { file in
                        taken += file.size
                        return taken <= bound
                    })
                left = bound - batch.reduce(Int64(0)) { $0 + $1.size }
            }
            guard !batch.isEmpty else { break }
            planned.append(batch)
        }
        return planned
    }

    /// Serves what the pack holds so far.
    private func publish(_ pack: PackWriter, offsets: [Digest: Int64], index: LayerIndex) {
        var partial = index
        partial.pack = PackLayout(size: pack.size, offsets: offsets)
        guard let file = try? pack.map(), let mapped = try? LayerPack(index: partial, file: file) else { return }
        packs.register(mapped)
    }

    /// Files in offset order, cut into runs of at most `limit` bytes of members (one request each).
    static func batches(_ files: [RemoteFile], limit: Int64) -> [[RemoteFile]] {
        var batches: [[RemoteFile]] = []
        for file in files.sorted(by: { $0.region.offset < $1.region.offset }) {
            if let first = batches.last?.first, file.region.end - first.region.offset <= limit {
                batches[batches.count - 1].append(file)
            } else {
                batches.append([file])
            }
        }
        return batches
    }
}
