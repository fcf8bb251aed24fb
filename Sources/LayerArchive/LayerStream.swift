import BlobCache
import Foundation
import OCI

/// A layer unpacked while it downloads. The producer (the thread receiving the registry's bytes) hands each
/// compressed chunk to `write`; gzip is decompressed right there (zlib), and a thread of the stream's own reads
/// the tar through libarchive and fills the layer's pack, hashing every file. Download, decompression and hashing
/// so run side by side, and the producer waits only when the unpacking falls `LayerStream.maxQueued` behind (the
/// memory a stream holds is bounded by that).
///
/// Nothing unpacked may be used before `finish`, which the caller calls once the layer's digest has verified (the
/// registry client checks it after the last byte): it waits for the unpacking to end and returns the index with the
/// uncommitted pack. A hostile or corrupt entry stops the unpacking (what arrives after it is dropped unread) and
/// is thrown by `finish`, not by `write`: the download runs to its end, so that bytes damaged on the way are told
/// (by the digest check) from a layer that is itself bad. `cancel` stops everything. Either way the pack is
/// removed unwritten.
///
/// One producer thread: `write`, `finish` and `cancel` are not for concurrent use.
public final class LayerStream {
    /// Decompressed bytes waiting for the unpacking thread, at most.
    public static let maxQueued = 16 << 20
    static let chunkSize = 1 << 20

    private let queue = ChunkQueue(maxBytes: LayerStream.maxQueued)
    private var inflater: GzipInflater?
    /// The first bytes, until there are enough to tell gzip from the rest.
    private var head: [UInt8] = []
    private var sniffed = false
    /// Decompressed bytes gathered into one chunk before they are queued.
    private var pending: ChunkQueue.Chunk?
    /// The unpacking thread's result, set once before `done` is signalled.
    private final class Outcome: @unchecked Sendable {
        var result: Result<UnpackedLayer, any Error>?
    }
    private let outcome = Outcome()
    private let done = DispatchSemaphore(value: 0)
    private var joined = false
    /// What stopped the unpacking (here or on its thread), thrown by `finish`.
    private var failure: (any Error)?

    init(unpacker: LayerUnpacker, layer: Digest, pack: PackWriter) {
        // The thread holds the queue and the outcome, not the stream, so a stream dropped unfinished is cancelled
        // by its deinit and the thread ends.
        let (queue, outcome, done) = (self.queue, self.outcome, self.done)
        let thread = Thread {
            let result = Result { () throws(TarError) -> UnpackedLayer in
                try unpacker.unpack(
                    layer: layer, reader: try ArchiveReader(source: queue, name: "layer \(layer.short)"),
                    blobSize: nil, into: pack)
            }
            if case .failure(let error) = result {
                pack.abort()  // also when libarchive failed before the unpacking began
                queue.fail(error)
            }
            outcome.result = result.mapError { $0 as any Error }
            done.signal()
        }
        thread.name = "mcvfs-unpack-\(layer.short)"
        thread.start()
    }

    deinit { cancel() }

    /// Feeds the next compressed bytes of the layer; after a failure of the unpacking they are dropped.
    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil else { return }
        do { try feed(bytes) } catch { failure = error }
    }

    private func feed(_ bytes: UnsafeRawBufferPointer) throws {
        guard sniffed else {
            head += bytes
            if head.count >= 2 {
                sniffed = true
                // gzip's magic; anything else (tar, zstd) goes to libarchive as it is.
                if head[0] == 0x1f && head[1] == 0x8b { inflater = GzipInflater(chunk: Self.chunkSize) }
                let first = head
                head = []
                try first.withUnsafeBytes { try feed($0) }
            }
            return
        }
        if let inflater {
            try inflater.inflate(bytes) { try gather($0) }
        } else {
            try gather(bytes)
        }
    }

    /// Ends the input (call after the layer's digest verified) and waits for the unpacking.
    /// - Returns: the index and the pack, readable (`PackWriter.map`) and not yet committed.
    /// - Throws: `TarError` for a corrupt, truncated or hostile layer.
    public func finish() throws -> UnpackedLayer {
        do {
            if let failure { throw failure }
            if !sniffed && !head.isEmpty {
                throw TarError.corrupt(path: nil, reason: "layer of \(head.count) byte(s)")
            }
            try inflater?.finish()
            if let pending { try queue.push(pending) }
            pending = nil
            queue.close(failure: nil)
        } catch {
            queue.close(failure: error)
            join()
            // The tar may have ended cleanly before the stream's own end was found wrong.
            if case .success(let unpacked)? = outcome.result { unpacked.pack.abort() }
            throw error
        }
        join()
        return try outcome.result!.get()
    }

    /// Stops the unpacking and drops what it wrote; the stream cannot be used afterwards.
    public func cancel() {
        guard !joined else { return }
        queue.close(failure: CancellationError())
        join()
        if case .success(let unpacked)? = outcome.result { unpacked.pack.abort() }
    }

    private func join() {
        guard !joined else { return }
        done.wait()
        joined = true
    }

    private func gather(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        while !rest.isEmpty {
            let chunk = pending ?? ChunkQueue.Chunk(capacity: Self.chunkSize)
            let taken = chunk.append(rest)
            rest = UnsafeRawBufferPointer(rebasing: rest[taken...])
            if chunk.isFull {
                pending = nil
                try queue.push(chunk)
            } else {
                pending = chunk
            }
        }
    }
}

extension LayerUnpacker {
    /// Starts unpacking a layer whose bytes the caller will stream in (`LayerStream`).
    /// - Throws: `TarError.unsupportedMediaType` for a media type that is no tar kind; `.store` when the pack cannot
    ///   be created.
    public func stream(layer: Digest, mediaType: String? = nil) throws(TarError) -> LayerStream {
        if let mediaType, !MediaType.isTarLayer(mediaType) { throw TarError.unsupportedMediaType(mediaType) }
        return LayerStream(unpacker: self, layer: layer, pack: try createPack(for: layer))
    }
}

/// The bounded hand-over between a stream's producer and its unpacking thread.
///
/// Guarded by `condition` (a lock with waiting): the producer waits in `push` while `maxBytes` are queued, the
/// consumer in `next` while nothing is. Either side's failure wakes the other.
final class ChunkQueue: ArchiveSource, @unchecked Sendable {
    /// Bytes of one chunk, owned by whoever holds the chunk.
    final class Chunk {
        let storage: UnsafeMutableRawBufferPointer
        private(set) var count = 0

        init(capacity: Int) { storage = .allocate(byteCount: capacity, alignment: 64) }
        deinit { storage.deallocate() }

        var isFull: Bool { count == storage.count }
        var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[..<count]) }

        /// Copies as much of `bytes` as fits; returns how many.
        func append(_ bytes: UnsafeRawBufferPointer) -> Int {
            let n = min(bytes.count, storage.count - count)
            UnsafeMutableRawBufferPointer(rebasing: storage[count..<(count + n)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[..<n]))
            count += n
            return n
        }
    }

    private struct State {
        var chunks: [Chunk] = []
        var bytes = 0
        /// The producer is done (cleanly when `failure` is nil).
        var closed = false
        var failure: (any Error)?
        /// The chunk the consumer reads now; kept until its next call, as libarchive requires.
        var current: Chunk?
    }

    private let condition = NSCondition()
    private var state = State()
    let maxBytes: Int

    init(maxBytes: Int) { self.maxBytes = maxBytes }

    /// Queues `chunk`, waiting while the queue is full.
    /// - Throws: the consumer's failure.
    func push(_ chunk: Chunk) throws {
        condition.lock()
        defer { condition.unlock() }
        while state.bytes >= maxBytes && state.failure == nil { condition.wait() }
        if let failure = state.failure { throw failure }
        state.chunks.append(chunk)
        state.bytes += chunk.count
        condition.broadcast()
    }

    /// The producer's end: no more chunks; with a failure, the consumer stops at its next read.
    func close(failure: (any Error)?) {
        condition.lock()
        defer { condition.unlock() }
        state.closed = true
        if let failure, state.failure == nil { state.failure = failure }
        condition.broadcast()
    }

    /// The consumer's failure: the producer's next push throws it.
    func fail(_ error: any Error) {
        condition.lock()
        defer { condition.unlock() }
        if state.failure == nil { state.failure = error }
        state.chunks.removeAll()
        state.bytes = 0
        condition.broadcast()
    }

    func next() throws -> UnsafeRawBufferPointer? {
        condition.lock()
        defer { condition.unlock() }
        state.current = nil
        while state.chunks.isEmpty && !state.closed && state.failure == nil { condition.wait() }
        if let failure = state.failure { throw failure }
        guard !state.chunks.isEmpty else { return nil }
        let chunk = state.chunks.removeFirst()
        state.bytes -= chunk.count
        state.current = chunk
        condition.broadcast()
        return chunk.bytes
    }
}
