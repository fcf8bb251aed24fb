import BlobCache
import Foundation
import LayerArchive
import OCI
import Registry
import SingleFlight

/// Layers and their files for a filesystem or a command, from the local cache or the registry.
///
/// A layer's index comes from disk when it was built before, else from a whole-layer download
/// (`LayerDownloader`: unpacked while it arrives into the layer's pack, whose files are then served in place,
/// `PackedLayers`), or, with `lazy`, for a layer whose descriptor carries the eStargz `toc.digest` annotation,
/// from its TOC alone (`TOCIndexer`). File contents of such a layer are fetched on demand with the other files of
/// their directory (`VerifyingReader` over `LayerBlobReader`), each verified against its TOC digest, served from
/// memory at once and committed to the store in the background (`MemoryBlobCache`). One index build per layer
/// and one fetch per file run at a time in this process (`SingleFlight`); the store's ingest lock covers other
/// processes.
public final class LayerFetcher: Sendable {
    public let metrics: FetchMetrics
    private let store: DirectoryBlobStore
    private let indexes: LayerIndexCache
    private let lazy: Bool
    private let downloader: LayerDownloader
    /// nil when offline.
    private let reader: VerifyingReader?
    private let tocIndexer = TOCIndexer()
    private let files = RemoteFileMap()
    private let memory: MemoryBlobCache
    private let packs: PackedLayers
    private let prefetchMode: PrefetchPolicy.Mode
    /// nil when offline.
    private let prefetcher: LayerPrefetcher?
    private let layerFlights = SingleFlight<Digest, LayerIndex>()

    /// - Parameters:
    ///   - client: nil when offline: only what is already local can be served.
    ///   - lazy: index eStargz layers from their TOC and fetch files on demand (mounts); otherwise every layer
    ///     is downloaded whole (fetch, extract).
    ///   - prefetch: what a lazy fetcher fetches of eStargz layers ahead of use.
    public convenience init(
        client: RegistryClient?, repository: String, store: DirectoryBlobStore, metrics: FetchMetrics,
        lazy: Bool = false, prefetch: PrefetchPolicy = PrefetchPolicy(mode: .none)
    ) throws {
        try self.init(
            client: client, repository: repository, store: store, metrics: metrics, lazy: lazy,
            memory: MemoryBlobCache(store: store), prefetch: prefetch)
    }

    init(
        client: RegistryClient?, repository: String, store: DirectoryBlobStore, metrics: FetchMetrics, lazy: Bool,
        memory: MemoryBlobCache, prefetch: PrefetchPolicy = PrefetchPolicy(mode: .none)
    ) throws {
        self.store = store
        self.indexes = try LayerIndexCache(store: store)
        self.metrics = metrics
        self.lazy = lazy
        self.downloader = LayerDownloader(client: client, repository: repository, store: store, metrics: metrics)
        let files = self.files
        self.reader = client.map {
            VerifyingReader(
                client: $0, repository: repository, metrics: metrics, memory: memory,
                neighbours: { files.files(of: $0, within: $1) })
        }
        self.memory = memory
        let packs = PackedLayers(store: store)
        self.packs = packs
        self.prefetchMode = prefetch.mode
        let (indexes, tocIndexer) = (self.indexes, self.tocIndexer)
        self.prefetcher = reader.map {
            LayerPrefetcher(
                policy: prefetch, reader: $0, files: files, memory: memory, packs: packs, store: store,
                metrics: metrics,
                persist: { index in
                    // An index not persisted yet is replaced in memory, so its first save does not lose the pack.
                    if !tocIndexer.replaceUnsaved(index) { try indexes.save(index) }
                })
        }
    }

    public enum FetchError: Error, Equatable, CustomStringConvertible {
        case offline(Digest)
        /// The TOC fetched does not hash to the layer's `toc.digest` annotation (the layer is then downloaded whole).
        case tocDigestMismatch(layer: Digest, expected: Digest, actual: Digest)
        /// A content no index of this fetcher names, and not in the store.
        case unknownContent(Digest)

        public var description: String {
            switch self {
            case .offline(let digest): return "layer \(digest.short) is not in the local cache and mcvfs is offline"
            case .tocDigestMismatch(let layer, let expected, let actual):
                return
                    "layer \(layer.short): eStargz TOC has digest \(actual), the manifest's annotation says \(expected)"
            case .unknownContent(let digest): return "file blob \(digest) is neither local nor in a known layer"
            }
        }
    }

    /// Index builds and file fetches running now (entries go when their flight lands).
    var flightsInAir: Int { layerFlights.inFlight + (reader?.inFlight ?? 0) }

    /// Callers waiting for another caller's index build or file fetch now.
    var waitingOnFlights: Int { layerFlights.followers + (reader?.waiting ?? 0) }

    // MARK: Layers

    /// The index of `layer`: persisted, built from its TOC (lazy eStargz), or from a whole-layer download.
    /// Concurrent calls for one layer wait for one build and share its outcome, failures included.
    public func index(of layer: Descriptor) throws -> LayerIndex {
        if let index = loadUsable(layer) {
            metrics.layerLookup(hit: true)
            return index
        }
        var led = false
        let index = try layerFlights.run(layer.digest) {
            led = true
            // A flight may have landed between the check above and this one's claim.
            let loaded = loadUsable(layer)
            metrics.layerLookup(hit: loaded != nil)
            if let loaded { return loaded }
            do { return try build(layer) } catch {
                metrics.failed(error, verification: Self.isVerificationFailure(error))
                throw error
            }
        }
        if !led { metrics.layerLookup(hit: true) }  // served by another caller's build
        return index
    }

    /// An eStargz layer this small is fetched whole when anything is prefetched: one request then brings all of
    /// it, where its footer, its TOC and its files would take three round trips in sequence (at 1 Gbit/s and 20 ms
    /// a round trip carries 2.5 MB).
    public static let smallLayerSize: Int64 = 4 << 20

    /// True when `index(of:)` downloads `layer` whole (a layer without a TOC, any layer when not lazy, a small
    /// eStargz layer when prefetching): what a caller that downloads outside a lock asks first.
    public func downloadsWhole(_ layer: Descriptor) -> Bool {
        guard lazy, layer.annotations?[EStargz.tocDigestAnnotation] != nil else { return true }
        return prefetchMode != .none && layer.size <= Self.smallLayerSize
    }

    private func build(_ layer: Descriptor) throws -> LayerIndex {
        guard !downloadsWhole(layer), let annotation = layer.annotations?[EStargz.tocDigestAnnotation] else {
            return try unpackWhole(layer)
        }
        guard let reader else { throw FetchError.offline(layer.digest) }
        let index: LayerIndex
        do {
            index = try tocIndexer.index(annotation: annotation, reader: reader.reader(for: layer))
        } catch let error as FetchError {
            guard case .tocDigestMismatch = error else { throw error }
            // stargz-snapshotter's fallback: the layer whole, verified by its own digest (`unpackWhole` records it).
            return try unpackWhole(layer)
        } catch let error as TarError {
            // A footer or TOC that cannot be read (a layer that is not eStargz after all): the same fallback.
            metrics.checkedTOC(of: layer.digest, .mismatch("its TOC cannot be read: \(error)"))
            return try unpackWhole(layer, tocRead: false)
        }
        metrics.checkedTOC(of: layer.digest, .verified)
        // Registered before it is published, so no caller finds the index and then misses its files.
        files.registerInBackground(index, layer: layer)
        tocIndexer.keep(index)
        prefetcher?.start(index, layer: layer)
        return index
    }

    /// The layer unpacked into its pack and served from it at once. A mount (lazy) commits the pack and persists
    /// the index in the background; a command (fetch, extract) before it returns, since it exits next.
    /// - Parameter tocRead: whether to compare the TOC the layer holds with its annotation (`checkTOC`).
    private func unpackWhole(_ layer: Descriptor, tocRead: Bool = true) throws -> LayerIndex {
        if let blob = store.path(for: layer.digest) {  // downloaded whole by an older mcvfs
            let index = try indexes.build(layer: layer.digest, blobPath: blob, mediaType: layer.mediaType)
            guard packs.open(index) else { throw CacheError.notFound(layer.digest) }
            if tocRead { checkTOC(of: layer, in: index) }
            return index
        }
        let downloaded = try downloader.unpack(layer, with: indexes.unpacker)
        let index = downloaded.unpacked.index
        if tocRead { checkTOC(of: layer, in: index) }
        packs.register(try LayerPack(index: index, file: downloaded.unpacked.pack.map()), unpacked: index)
        if lazy {
            packs.commitInBackground(downloaded, into: indexes) { [metrics] in
                metrics.failed($0, verification: false)
            }
        } else {
            try PackedLayers.commit(downloaded, into: indexes)
        }
        return index
    }

    /// Records what the `toc.digest` annotation of `layer`, served from `index`, is worth: the same rule whether
    /// the layer was indexed from its TOC, downloaded whole because it is small, or because its TOC did not match.
    private func checkTOC(of layer: Descriptor, in index: LayerIndex) {
        guard let annotation = layer.annotations?[EStargz.tocDigestAnnotation],
            metrics.tocCheck(of: layer.digest) == nil
        else { return }
        // Indexed from its TOC: that TOC matched the annotation before the index was built.
        if index.remote != nil {
            metrics.checkedTOC(of: layer.digest, .verified)
            return
        }
        guard let toc = index.entries.first(where: { $0.path == EStargz.tocName })?.content else {
            metrics.checkedTOC(of: layer.digest, .mismatch("the layer holds no \(EStargz.tocName)"))
            return
        }
        metrics.checkedTOC(
            of: layer.digest,
            toc.description == annotation
                ? .verified : .mismatch("its TOC has digest \(toc), the annotation says \(annotation)"))
    }

    /// The index already built, when this fetcher can serve from it: a TOC-built one only when lazy (or when every
    /// content it names is local after all); a packed one when its pack is there.
    private func loadUsable(_ layer: Descriptor) -> LayerIndex? {
        if lazy, let index = tocIndexer.unsaved(layer.digest) { return index }
        if let index = packs.unpacked(layer.digest) {
            checkTOC(of: layer, in: index)
            return index
        }
        guard let index = indexes.load(layer: layer.digest) else { return nil }
        checkTOC(of: layer, in: index)
        // A layer unpacked whole is its pack; an eStargz layer's pack holds what a prefetch wrote (if it is gone,
        // its files are fetched by range again).
        if index.pack != nil && !packs.open(index) && index.remote == nil { return nil }
        if index.remote != nil {
            guard lazy || indexes.isComplete(index) else { return nil }
            files.register(index, layer: layer)
            if lazy { prefetcher?.start(index, layer: layer) }
        }
        return index
    }

    /// Downloads `layer` into the store unless it is there; returns its local path.
    @discardableResult
    public func fetchBlob(_ layer: Descriptor) throws -> String { try downloader.blob(layer) }

    /// Downloads a whole layer, for a caller that downloads before it indexes (outside a lock it indexes under):
    /// a whole layer is unpacked as it downloads, so this is its index's build, and the `index(of:)` that follows
    /// finds it done. Failures count as `index(of:)` counts them.
    public func download(_ layer: Descriptor) throws {
        _ = try index(of: layer)
    }

    public func path(of content: Digest) -> String? { store.path(for: content) }

    // MARK: Files

    /// The verified bytes of `content`: from the store, from memory, or fetched from the registry with the other
    /// files of its directory not yet local (in as few requests as their layout allows), each checked against
    /// its TOC digest. Fetched files are served from memory and stored in the background, so no sync of the
    /// filesystem stands between a first read and its bytes. Concurrent calls for files of one directory wait
    /// for one fetch.
    /// - Throws: `FetchError.unknownContent` for a digest no lazy index names; `TarError.corrupt` or
    ///   `CacheError.digestMismatch` for bytes that do not verify (nothing is kept then); registry errors.
    public func fetch(_ content: Digest) throws -> FileBytes {
        if let found = local(content) { return found }
        let locations = files.locations(of: content)
        guard !locations.isEmpty else { throw FetchError.unknownContent(content) }
        for (i, file) in locations.enumerated() {
            do { return try fetch(file) } catch RegistryError.notFound where i < locations.count - 1 {
                // The layer is gone (its image's tag was removed and the registry collected it): the same bytes,
                // verified against the same digest, come from another layer that holds them.
                files.markGone(file.layer.digest)
            }
        }
        throw FetchError.unknownContent(content)  // unreachable: the last location returns or throws
    }

    private func fetch(_ file: RemoteFile) throws -> FileBytes {
        let content = file.content
        do {
            if file.chunks.isEmpty { return .stored(path: try store.ensure(content, expectedSize: 0) { _ in }) }
            guard let reader else { throw FetchError.offline(content) }
            prefetcher?.awaitHotClaims(of: file.layer.digest)
            if let found = local(content) { return found }
            guard file.isSingleMember else { return .stored(path: try reader.store(file, in: store)) }
            // Its directory's other files come along, but not those the background prefetch is bringing now:
            // this read waits for nobody's flight but its own file's.
            let wanted =
                [file]
                + files.siblings(of: file).filter {
                    local($0.content) == nil && !reader.isFetchingInBackground($0.content)
                }
            let fetched = reader.files(wanted, commit: .soon)
            guard let outcome = fetched[content] else { throw FetchError.unknownContent(content) }
            return .held(try outcome.get().data)
        } catch {
            metrics.failed(error, verification: Self.isVerificationFailure(error))
            throw error
        }
    }

    /// Makes `content` local and returns its path (for callers that need a file): `fetch`, then, when the bytes
    /// are only in memory, a commit of what is held.
    public func materialize(_ content: Digest) throws -> String {
        switch try fetch(content) {
        case .stored(let path): return path
        case .mapped(let region):
            // A file of its own, copied out of the pack (verified again on the way in).
            return try store.ingest(data: Data(region.bytes), expected: content).path
        case .held: break
        }
        memory.commit()
        guard let path = store.path(for: content) else {
            throw CacheError.io(operation: "commit", path: content.description, errno: EIO)
        }
        return path
    }

    /// The bytes of a file content, wherever `fetch` finds them (memory, the store or a pack; fetching them first).
    public func contents(of content: Digest) throws -> Data {
        try fetch(content).data()
    }

    /// Fetches what it can of `contents` (best effort, for the tree build's metadata): single-member files not
    /// yet local, in coalesced range requests, verified and held in memory until the next commit. Failures are
    /// left for `fetch` to report.
    public func prefetch(_ contents: [Digest]) {
        guard let reader else { return }
        let candidates = files.files(contents)
        // The hot regions first in flight (they hold this metadata with `--prefetch all`): joined, not fetched again.
        for layer in Set(candidates.map(\.layer.digest)) { prefetcher?.awaitHotClaims(of: layer) }
        let wanted = candidates.filter { $0.isSingleMember && local($0.content) == nil }
        guard !wanted.isEmpty else { return }
        _ = reader.files(wanted, commit: .withNext)
    }

    /// Persists the indexes built from TOCs and commits the prefetched metadata still held in memory (one sync
    /// for all), so a later mount over this cache fetches none of it again.
    public func persistPrefetched() {
        for error in tocIndexer.persist(into: indexes) { metrics.failed(error, verification: false) }
        memory.commit()
        waitForCommits()
    }

    /// Waits until the layers unpacked whole so far are committed (their blobs, packs and indexes on disk).
    public func waitForCommits() { packs.waitForCommits() }

    /// Waits until the prefetches started so far have ended (tests, and `fetch`).
    public func waitForPrefetches() { prefetcher?.waitUntilIdle() }

    private func local(_ content: Digest) -> FileBytes? {
        if let pack = packs.pack(holding: content), let region = pack.region(of: content) {
            return .mapped(MappedRegion(bytes: region, owner: pack))
        }
        if let path = store.path(for: content) { return .stored(path: path) }
        return memory.data(content).map(FileBytes.held)
    }

    static func isVerificationFailure(_ error: any Error) -> Bool {
        switch error {
        case RegistryError.digestMismatch, CacheError.digestMismatch, is TarError, FetchError.tocDigestMismatch:
            return true
        default: return false
        }
    }
}
