import BlobCache
import ContentHash
import Foundation
import OCI
import Registry
import Synchronization
import TarIndex
import TimeBudget

/// Gets a layer's index: from disk when it was built before, else by downloading the blob (streamed into the
/// store, which verifies it before committing) and indexing it. One download per digest at a time in this
/// process; the store's ingest lock covers other processes.
///
/// With `lazy`, a layer whose descriptor carries the eStargz `toc.digest` annotation is not downloaded: its
/// footer and TOC are fetched by range, the TOC is checked against the annotation, and the index is built from
/// the TOC. File contents are then fetched on demand (`fetch`), each verified against the TOC's digest before it
/// is served or stored.
public final class LayerFetcher: Sendable {
    private let client: RegistryClient?
    private let repository: String
    private let store: DirectoryBlobStore
    private let indexes: LayerIndexCache
    private let lazy: Bool
    public let metrics: FetchMetrics
    private let flights = Mutex<[Digest: NSLock]>([:])
    /// Lock order: a group gate (held across its range requests, the single flight for the files of one
    /// directory), then `remote`. `remote` is never held across I/O.
    private let groupGates = Mutex<[String: NSLock]>([:])
    private let remote = Mutex(RemoteFiles())
    /// Registrations of TOC-built indexes still running (`fetch` and `prefetch` wait for them).
    private let registrations = DispatchGroup()
    /// Verified bytes not yet committed to the store: files fetched for a first read (served from here, committed
    /// in the background after `commitDelay`) and metadata a root listing prefetched (committed with
    /// `persistPrefetched`), so no file creation or filesystem sync stands on a read's path.
    private let held = Mutex<[Digest: Data]>([:])
    private let commitScheduled = Atomic(false)
    /// Fetched files wait this long in memory, so that the files a process opens together share one commit.
    static let commitDelay = DispatchTimeInterval.milliseconds(500)

    /// Where each lazily indexed content lies, and which contents share a directory (fetched together).
    struct RemoteFiles {
        struct File {
            var layer: Descriptor
            var chunks: [RemoteLayout.Chunk]
            var size: Int64
            var group: String
        }
        var files: [Digest: File] = [:]
        var groups: [String: [Digest]] = [:]
        var registered: Set<Digest> = []
        /// Indexes built from a TOC in this process and not yet persisted.
        var unsaved: [Digest: LayerIndex] = [:]

        mutating func register(_ index: LayerIndex, layer: Descriptor) {
            guard let layout = index.remote, registered.insert(layer.digest).inserted else { return }
            let layerName = layer.digest.hex
            for entry in index.entries where entry.kind == .file {
                guard let content = entry.content, files[content] == nil else { continue }
                let directory = entry.path.lastIndex(of: "/").map { String(entry.path[..<$0]) } ?? ""
                let group = layerName + "/" + directory
                files[content] = File(
                    layer: layer, chunks: layout.chunks(of: content) ?? [], size: entry.size, group: group)
                groups[group, default: []].append(content)
            }
        }
    }

    /// Neighbouring members closer than this are fetched in one request (the gap is downloaded and dropped).
    static let coalesceGap: Int64 = 256 << 10
    /// One grouped request covers at most this many bytes.
    static let maxSpan: Int64 = 32 << 20

    /// - Parameters:
    ///   - client: nil when offline: only what is already local can be served.
    ///   - lazy: index eStargz layers from their TOC and fetch files on demand (mounts); otherwise every layer
    ///     is downloaded whole (fetch, extract).
    public init(
        client: RegistryClient?, repository: String, store: DirectoryBlobStore, metrics: FetchMetrics,
        lazy: Bool = false
    ) throws {
        self.client = client
        self.repository = repository
        self.store = store
        self.indexes = try LayerIndexCache(store: store)
        self.metrics = metrics
        self.lazy = lazy
    }

    public enum FetchError: Error, Equatable, CustomStringConvertible {
        case offline(Digest)
        /// The TOC fetched does not hash to the layer's `toc.digest` annotation: the image is unusable.
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

    public func index(of layer: Descriptor) throws -> LayerIndex {
        if let index = loadUsable(layer) {
            metrics.layerLookup(hit: true)
            return index
        }
        let gate = flights.withLock { $0[layer.digest, default: NSLock()] }
        gate.lock()
        defer { gate.unlock() }
        if let index = loadUsable(layer) {
            metrics.layerLookup(hit: true)
            return index
        }
        metrics.layerLookup(hit: false)
        do {
            if lazy, let annotation = layer.annotations?[EStargz.tocDigestAnnotation] {
                let index = try tocIndex(of: layer, annotation: annotation)
                // Persisting (encoding thousands of entries, a sync) waits for `persistPrefetched`, off the path
                // to the first kernel; until then the index lives in this process.
                remote.withLock { $0.unsaved[layer.digest] = index }
                // Mapping every content to where it lies takes tens of milliseconds for a large TOC: it runs
                // beside the tree build, and fetches wait for it.
                registrations.enter()
                DispatchQueue.global(qos: .userInitiated).async { [self] in
                    remote.withLock { $0.register(index, layer: layer) }
                    registrations.leave()
                }
                return index
            }
            let blob = try fetchBlob(layer)
            return try indexes.build(layer: layer.digest, blobPath: blob, mediaType: layer.mediaType)
        } catch {
            metrics.failed(error, verification: Self.isVerificationFailure(error))
            throw error
        }
    }

    /// The persisted index, when this fetcher can serve from it: a TOC-built one only when lazy (or when every
    /// content it names is local after all).
    private func loadUsable(_ layer: Descriptor) -> LayerIndex? {
        if lazy, let index = remote.withLock({ $0.unsaved[layer.digest] }) { return index }
        guard let index = indexes.load(layer: layer.digest) else { return nil }
        if index.remote != nil {
            guard lazy || indexes.isComplete(index) else { return nil }
            remote.withLock { $0.register(index, layer: layer) }
        }
        return index
    }

    /// Footer, then TOC, by range; the TOC must hash to the annotation.
    private func tocIndex(of layer: Descriptor, annotation: String) throws -> LayerIndex {
        guard let client else { throw FetchError.offline(layer.digest) }
        let expected: Digest
        do { expected = try Digest(parsing: annotation) } catch {
            throw TarError.corrupt(path: nil, reason: "layer \(layer.digest.short): bad toc.digest '\(annotation)'")
        }
        let footerStart = layer.size - Int64(EStargz.footerSize)
        guard footerStart > 0 else {
            throw TarError.corrupt(path: nil, reason: "layer \(layer.digest.short) is too small for eStargz")
        }
        let footer = try range(footerStart..<layer.size, of: layer, client: client)
        let tocOffset = try EStargz.tocOffset(footer: [UInt8](footer))
        guard tocOffset < footerStart, footerStart - tocOffset <= EStargz.maxTOCSize else {
            throw TarError.corrupt(
                path: nil, reason: "layer \(layer.digest.short): TOC offset \(tocOffset) out of range")
        }
        let member = try range(tocOffset..<footerStart, of: layer, client: client)
        let json = try EStargz.tocJSON(fromMember: member)
        let actual = SHA256Hasher.digest(json)
        guard actual == expected else {
            throw FetchError.tocDigestMismatch(layer: layer.digest, expected: expected, actual: actual)
        }
        return try EStargz.index(layer: layer.digest, toc: json, tocOffset: tocOffset, tocDigest: actual)
    }

    private func range(_ bytes: Range<Int64>, of layer: Descriptor, client: RegistryClient) throws -> Data {
        var data = Data()
        data.reserveCapacity(Int(bytes.count))
        try client.getBlob(repository: repository, digest: layer.digest, range: bytes) { data.append(contentsOf: $0) }
        metrics.fetchedRange(bytes: Int64(data.count))
        return data
    }

    /// Where a verified file's bytes are.
    public enum Verified: Sendable {
        /// In the local store.
        case stored(path: String)
        /// Fetched and verified, held in memory until the background commit stores it.
        case held(Data)
    }

    /// The verified bytes of `content`: from the store, from memory, or fetched from the registry with the other
    /// files of its directory not yet local (in as few requests as their layout allows), each checked against
    /// its TOC digest. Fetched files are served from memory and stored in the background, so no sync of the
    /// filesystem stands between a first read and its bytes. Concurrent calls for files of one directory wait
    /// for one fetch.
    /// - Throws: `FetchError.unknownContent` for a digest no lazy index names; `TarError.corrupt` or
    ///   `CacheError.digestMismatch` for bytes that do not verify (nothing is kept then); registry errors.
    public func fetch(_ content: Digest) throws -> Verified {
        if let found = local(content) { return found }
        registrations.wait()
        guard let file = remote.withLock({ $0.files[content] }) else { throw FetchError.unknownContent(content) }
        let gate = groupGates.withLock { $0[file.group, default: NSLock()] }
        gate.lock()
        defer { gate.unlock() }
        if let found = local(content) { return found }
        do {
            if file.chunks.isEmpty {
                return .stored(path: try store.ensure(content, expectedSize: 0) { _ in })
            }
            if file.chunks.count > 1 || file.chunks[0].length > Self.maxSpan {
                return .stored(path: try fetchChunked(content, file))
            }
            let siblings = remote.withLock { state in
                (state.groups[file.group] ?? []).compactMap { digest -> (Digest, RemoteFiles.File)? in
                    guard digest != content, let sibling = state.files[digest], sibling.chunks.count == 1,
                        sibling.chunks[0].length <= Self.maxSpan
                    else {
                        return nil
                    }
                    return (digest, sibling)
                }
            }.filter { local($0.0) == nil }
            let fetched = try fetchVerified([(content, file)] + siblings, required: content)
            hold(fetched)
            guard let data = fetched.first(where: { $0.expected == content })?.data else {
                throw FetchError.unknownContent(content)
            }
            return .held(data)
        } catch {
            metrics.failed(error, verification: Self.isVerificationFailure(error))
            throw error
        }
    }

    /// Makes `content` local and returns its path (for callers that need a file): `fetch`, then, when the bytes
    /// are only in memory, a commit of what is held.
    public func materialize(_ content: Digest) throws -> String {
        if case .stored(let path) = try fetch(content) { return path }
        commitHeld()
        guard let path = store.path(for: content) else {
            throw CacheError.io(operation: "commit", path: content.description, errno: EIO)
        }
        return path
    }

    private func local(_ content: Digest) -> Verified? {
        if let path = store.path(for: content) { return .stored(path: path) }
        return held.withLock { $0[content] }.map(Verified.held)
    }

    /// Keeps verified bytes in memory and schedules their commit to the store.
    private func hold(_ blobs: [(expected: Digest, data: Data)]) {
        let schedule = held.withLock { held in
            for (digest, data) in blobs { held[digest] = data }
            return !blobs.isEmpty && commitScheduled.exchange(true, ordering: .relaxed) == false
        }
        guard schedule else { return }
        DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + Self.commitDelay) { [self] in
            commitScheduled.store(false, ordering: .relaxed)
            commitHeld()
        }
    }

    /// Stores what is held in memory (one filesystem sync for all).
    private func commitHeld() {
        let pending = held.withLock { held in held.map { (expected: $0.key, data: $0.value) } }
        guard !pending.isEmpty else { return }
        let committed = store.commitBatch(pending)
        held.withLock { held in
            for (digest, result) in committed { if case .success = result { held[digest] = nil } }
        }
    }

    /// Fetches what it can of `contents` (best effort, for the tree build's metadata): single-member files not
    /// yet local, in coalesced range requests, verified and held in memory (`fetch` serves them; the next commit
    /// stores them). Failures are left for `fetch` to report.
    public func prefetch(_ contents: [Digest]) {
        registrations.wait()
        let wanted = remote.withLock { state in
            contents.compactMap { digest -> (Digest, RemoteFiles.File)? in
                guard let file = state.files[digest], file.chunks.count == 1, file.chunks[0].length <= Self.maxSpan
                else { return nil }
                return (digest, file)
            }
        }.filter { local($0.0) == nil }
        guard let fetched = try? fetchVerified(wanted, required: nil) else { return }
        held.withLock { held in
            for (digest, data) in fetched { held[digest] = data }
        }
    }

    /// Persists the indexes built from TOCs and commits the prefetched metadata still held in memory (one sync
    /// for all), so a later mount over this cache fetches none of it again.
    public func persistPrefetched() {
        for (digest, index) in remote.withLock({ $0.unsaved }) {
            do {
                try indexes.save(index)
                remote.withLock { _ = $0.unsaved.removeValue(forKey: digest) }
            } catch {
                metrics.failed(error, verification: false)
            }
        }
        commitHeld()
    }

    /// The bytes of a file content: from memory when prefetched, else from the store (fetching it first).
    public func contents(of content: Digest) throws -> Data {
        switch try fetch(content) {
        case .held(let data): return data
        case .stored(let path): return try Data(contentsOf: URL(fileURLWithPath: path))
        }
    }

    /// Fetches single-member files in coalesced spans of one layer at a time and returns the bytes of those whose
    /// sha256 matches the TOC; only the failure of `required` is thrown.
    private func fetchVerified(
        _ files: [(Digest, RemoteFiles.File)], required: Digest?
    ) throws -> [(expected: Digest, data: Data)] {
        guard let client else {
            if let required { throw FetchError.offline(required) }
            return []
        }
        var seen = Set<Digest>()
        let byLayer = Dictionary(grouping: files.filter { seen.insert($0.0).inserted }, by: { $0.1.layer.digest })
        let spans = byLayer.values.flatMap { group in
            Self.spans(of: group).map { (layer: group[0].1.layer, files: $0) }
        }
        // The spans of one directory (its metadata run and its binaries) are fetched at once: one round trip.
        // Each under the caller's deadline, which does not follow work onto other threads by itself.
        let results = Mutex([Result<[(expected: Digest, data: Data)], any Error>?](repeating: nil, count: spans.count))
        let deadline = Deadline.current
        DispatchQueue.concurrentPerform(iterations: spans.count) { i in
            let result = Result {
                try Deadline.bind(deadline) {
                    try fetchSpan(spans[i].files, of: spans[i].layer, client: client, required: required)
                }
            }
            results.withLock { $0[i] = result }
        }
        return try results.withLock { $0 }.flatMap { try $0!.get() }
    }

    /// Neighbouring members of one layer, in offset order, grouped into the spans one request each fetches.
    private static func spans(of files: [(Digest, RemoteFiles.File)]) -> [[(Digest, RemoteFiles.File)]] {
        var spans: [[(Digest, RemoteFiles.File)]] = []
        for item in files.sorted(by: { $0.1.chunks[0].offset < $1.1.chunks[0].offset }) {
            let chunk = item.1.chunks[0]
            if let last = spans.last?.last?.1.chunks[0], let first = spans.last?.first?.1.chunks[0],
                chunk.offset - (last.offset + last.length) <= coalesceGap,
                chunk.offset + chunk.length - first.offset <= maxSpan
            {
                spans[spans.count - 1].append(item)
            } else {
                spans.append([item])
            }
        }
        return spans
    }

    /// One span's request; the files whose bytes verify. Throws only when `required` is in it and fails.
    private func fetchSpan(
        _ span: [(Digest, RemoteFiles.File)], of layer: Descriptor, client: RegistryClient, required: Digest?
    ) throws -> [(expected: Digest, data: Data)] {
        let start = span[0].1.chunks[0].offset
        let end = span.map { $0.1.chunks[0].offset + $0.1.chunks[0].length }.max()!
        let data: Data
        do { data = try range(start..<end, of: layer, client: client) } catch {
            if span.contains(where: { $0.0 == required }) { throw error }
            return []
        }
        var verified: [(expected: Digest, data: Data)] = []
        for (content, file) in span {
            let chunk = file.chunks[0]
            do {
                let lower = Int(chunk.offset - start)
                let member = data.subdata(in: lower..<(lower + Int(chunk.length)))
                let bytes = try EStargz.chunkBytes(member: member, size: chunk.size, digest: chunk.digest)
                let actual = SHA256Hasher.digest(bytes)
                guard actual == content, Int64(bytes.count) == file.size else {
                    throw CacheError.digestMismatch(expected: content, actual: actual, size: Int64(bytes.count))
                }
                verified.append((content, bytes))
            } catch  where content != required {
                continue
            }
        }
        return verified
    }

    /// A file of several members: one request per member, streamed into the store in order.
    private func fetchChunked(_ content: Digest, _ file: RemoteFiles.File) throws -> String {
        guard let client else { throw FetchError.offline(content) }
        return try store.ensure(content, expectedSize: file.size) { writer in
            for chunk in file.chunks {
                let member = try range(chunk.offset..<(chunk.offset + chunk.length), of: file.layer, client: client)
                let bytes = try EStargz.chunkBytes(member: member, size: chunk.size, digest: chunk.digest)
                try writer.write(bytes)
            }
        }
    }

    /// `fetchBlob`, counting a failure as `index(of:)` does: for a caller that downloads a layer before it
    /// indexes it (outside a lock it indexes under).
    public func download(_ layer: Descriptor) throws {
        do { try fetchBlob(layer) } catch {
            metrics.failed(error, verification: Self.isVerificationFailure(error))
            throw error
        }
    }

    /// Downloads `layer` into the store unless it is there; returns its local path.
    @discardableResult
    public func fetchBlob(_ layer: Descriptor) throws -> String {
        if let path = store.path(for: layer.digest) { return path }
        guard let client else { throw FetchError.offline(layer.digest) }
        return try store.ensure(layer.digest, expectedSize: layer.size) { writer in
            let start = ContinuousClock.now
            try client.getBlob(repository: repository, digest: layer.digest, range: nil) { chunk in
                try writer.write(chunk)
            }
            let elapsed = ContinuousClock.now - start
            metrics.fetched(
                bytes: layer.size,
                seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
    }

    public func path(of content: Digest) -> String? { store.path(for: content) }

    static func isVerificationFailure(_ error: any Error) -> Bool {
        switch error {
        case RegistryError.digestMismatch, CacheError.digestMismatch, is TarError, FetchError.tocDigestMismatch:
            return true
        default: return false
        }
    }
}
