import BlobCache
import ContentHash
import Dispatch
import Foundation
import LayerArchive
import OCI
import Registry
import SingleFlight
import Synchronization

/// Bytes that hashed to the digest they are addressed by. The only initialisers verify, so a path that forgets to
/// verify does not compile: whatever holds a `VerifiedBlob` (the memory layer, a read's reply) holds checked bytes.
struct VerifiedBlob: Sendable {
    let digest: Digest
    let data: Data

    /// `data`, when its sha256 is `digest`.
    /// - Throws: `CacheError.digestMismatch`.
    init(_ data: Data, matching digest: Digest) throws(CacheError) {
        let actual = SHA256Hasher.digest(data)
        guard actual == digest else {
            throw .digestMismatch(expected: digest, actual: actual, size: Int64(data.count))
        }
        self.digest = digest
        self.data = data
    }

    /// A single-member file from its gzip member: decompressed up to the TOC's size, checked against the TOC's
    /// chunk digest (when it gives one), then against the file's size and content digest.
    /// - Throws: `TarError.corrupt` for a damaged member; `CacheError.digestMismatch` for bytes that do not match.
    init(member: Data, of file: RemoteFile) throws {
        let chunk = file.chunks[0]
        let bytes = try EStargz.chunkBytes(member: member, size: chunk.size, digest: chunk.digest)
        guard Int64(bytes.count) == file.size else {
            throw CacheError.digestMismatch(
                expected: file.content, actual: SHA256Hasher.digest(bytes), size: Int64(bytes.count))
        }
        try self.init(bytes, matching: file.content)
    }
}

/// Files of eStargz layers, fetched by range and handed out only once they match the TOC that the layer's
/// annotation pins: in memory as `VerifiedBlob`s (files of one member), or committed to the store, which verifies
/// the whole content before the rename (files of several members, streamed).
///
/// Single flight per file: a caller asking for a file another caller is fetching waits for that fetch and shares
/// its verified bytes (or its error), so a directory in flight is never fetched twice and its followers neither
/// fetch nor verify again. The other files a request's span happens to hold (the members between the wanted ones,
/// downloaded to save a round trip) are verified and kept too (`neighbours`), so no byte is fetched twice for them
/// either. Reads have a priority: a background read leaves out what on-demand reads are fetching, and an on-demand
/// read is never queued behind a background one: it waits only for the background fetch of a file it wants itself
/// (one batch, the bytes it needs), which it joins rather than fetch those bytes twice.
final class VerifyingReader: Sendable {
    enum Priority: Sendable {
        /// A caller is waiting: a lookup, an open, a listing.
        case onDemand
        /// Ahead of use (the rest of a layer): yields to on-demand reads.
        case background
    }

    private let client: RegistryClient
    private let repository: String
    private let metrics: FetchMetrics
    /// Where verified bytes go, and where a flight that just landed left them.
    private let memory: MemoryBlobCache
    private let onDemand = SingleFlight<Digest, VerifiedBlob>()
    private let background = SingleFlight<Digest, VerifiedBlob>()
    /// The single-member files of a layer lying inside a byte range (nil: keep only what was asked for).
    private let neighbours: (@Sendable (Digest, Range<Int64>) -> [RemoteFile])?

    init(
        client: RegistryClient, repository: String, metrics: FetchMetrics, memory: MemoryBlobCache,
        neighbours: (@Sendable (Digest, Range<Int64>) -> [RemoteFile])? = nil
    ) {
        self.client = client
        self.repository = repository
        self.metrics = metrics
        self.memory = memory
        self.neighbours = neighbours
    }

    /// Files whose fetch is running now, both priorities together (entries go when their flight lands).
    var inFlight: Int { onDemand.inFlight + background.inFlight }

    /// Callers waiting for another caller's fetch of a file now, counted once per file.
    var waiting: Int { onDemand.followers + background.followers }

    /// Whether a background read is fetching `content` now (it lands in memory or a pack soon).
    func isFetchingInBackground(_ content: Digest) -> Bool { background.isInFlight(content) }

    func reader(for layer: Descriptor) -> LayerBlobReader {
        LayerBlobReader(client: client, repository: repository, layer: layer, metrics: metrics)
    }

    /// The verified bytes of single-member `files`, fetched in coalesced spans (every layer's at once) and added to
    /// the memory layer before their flights land, so that a caller arriving after a landing finds them there. A
    /// file that fails (its request, its member, its digest) fails alone; the others are still returned.
    /// - Parameters:
    ///   - commit: when the memory layer stores what this read adds; nil when the caller stores the bytes itself (a
    ///     background read writing a layer's pack).
    ///   - claimed: called once this read's files are in flight (led here, or followed), before any byte is fetched.
    ///   - keep: given what this read fetched before its flights land (a background read writing a layer's pack
    ///     with `commit` nil), so that no caller finds a file neither in flight nor kept, and fetches it again.
    /// - Returns: an outcome per file, except, for a background read, the files on-demand reads were fetching.
    func files(
        _ files: [RemoteFile], priority: Priority = .onDemand, commit: MemoryBlobCache.Commit? = .soon,
        claimed: (@Sendable () -> Void)? = nil,
        keep: (([Digest: Result<VerifiedBlob, any Error>]) -> Void)? = nil
    ) -> [Digest: Result<VerifiedBlob, any Error>] {
        precondition(files.allSatisfy(\.isSingleMember), "files of several members are streamed into the store")
        var byContent: [Digest: RemoteFile] = [:]
        for file in files { byContent[file.content] = file }
        // An on-demand read joins the background fetch of a file it wants, rather than fetch its bytes twice.
        let joining = priority == .onDemand ? byContent.keys.filter { background.isInFlight($0) } : []
        let wanted =
            priority == .onDemand
            ? byContent.keys.filter { !joining.contains($0) } : byContent.keys.filter { !onDemand.isInFlight($0) }
        let lane = priority == .onDemand ? onDemand : background
        var told = false
        defer { if !told { claimed?() } }  // every file was another's flight: now landed
        func lead(_ led: [Digest]) -> [Digest: Result<VerifiedBlob, any Error>] {
            // A flight may have landed between the caller's look and this claim: what it left is not fetched again.
            var outcomes: [Digest: Result<VerifiedBlob, any Error>] = [:]
            var missing: [RemoteFile] = []
            for digest in led {
                if let blob = memory.blob(digest) {
                    outcomes[digest] = .success(blob)
                } else {
                    missing.append(byContent[digest]!)
                }
            }
            let fetched = fetch(missing, priority: priority)
            if let commit { memory.add(fetched.values.compactMap { try? $0.get() }, commit: commit) }
            keep?(fetched)
            return outcomes.merging(fetched) { local, _ in local }
        }
        var outcomes = lane.run(wanted) { led in
            claimed?()
            told = true
            return lead(led)
        }
        // After this read's own flights landed, so no two reads wait on each other's flights.
        if !joining.isEmpty { outcomes.merge(background.run(joining, lead)) { own, _ in own } }
        return outcomes
    }

    /// Streams a file of any number of members into `store`, each member checked against its chunk digest as it
    /// comes, the whole against the content digest before the store commits it. Concurrent callers wait on the
    /// store's ingest lock and find the file there.
    /// - Returns: the committed blob's path.
    func store(_ file: RemoteFile, in store: any BlobStore) throws -> String {
        let reader = reader(for: file.layer)
        return try store.ensure(file.content, expectedSize: file.size) { writer in
            for chunk in file.chunks {
                let member = try reader.read(chunk.offset..<(chunk.offset + chunk.length))
                try writer.write(try EStargz.chunkBytes(member: member, size: chunk.size, digest: chunk.digest))
            }
        }
    }

    /// One batch of led files: each layer's regions in spans, the layers side by side. The other files inside the
    /// spans go to the memory layer when they verify (nobody waits for them, so a failure of one is dropped). An
    /// on-demand read bridges gaps smaller than a range's overhead; a background read, bandwidth-bound, bridges
    /// none, so it never downloads again what is local already.
    private func fetch(_ files: [RemoteFile], priority: Priority) -> [Digest: Result<VerifiedBlob, any Error>] {
        let gap = priority == .onDemand ? LayerBlobReader.coalesceGap : 0
        let byLayer = Array(Dictionary(grouping: files, by: \.layer.digest).values)
        let results = Mutex([Digest: Result<VerifiedBlob, any Error>]())
        DispatchQueue.concurrentPerform(iterations: byLayer.count) { i in
            let group = byLayer[i]
            let wanted = Dictionary(group.map { ($0.region, $0) }, uniquingKeysWith: { first, _ in first })
            var verified: [Digest: Result<VerifiedBlob, any Error>] = [:]
            var extra: [VerifiedBlob] = []
            for (span, bytes) in reader(for: group[0].layer).readSpans(group.map(\.region), gap: gap) {
                for region in span.regions {
                    guard let file = wanted[region] else { continue }
                    verified[file.content] = bytes.flatMap { data in
                        Result { try VerifiedBlob(member: LayerBlobReader.slice(data, of: span, region), of: file) }
                    }
                }
                guard case .success(let data) = bytes, let neighbours else { continue }
                for file in neighbours(group[0].layer.digest, span.range) where wanted[file.region] == nil {
                    if memory.data(file.content) != nil { continue }
                    if let blob = try? VerifiedBlob(
                        member: LayerBlobReader.slice(data, of: span, file.region), of: file)
                    {
                        extra.append(blob)
                    }
                }
            }
            memory.add(extra, commit: .soon)
            results.withLock { $0.merge(verified) { first, _ in first } }
        }
        return results.withLock { $0 }
    }
}
