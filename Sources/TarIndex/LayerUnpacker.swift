import BlobCache
import ContentHash
import Foundation
import OCI

/// Reads a layer blob (tar, tar+gzip, tar+zstd; detected from the content, the media type is only checked to be
/// a tar kind) and stores every regular file's bytes in a `BlobStore` as its own content-addressed blob, hashed
/// while copied, so each stored file is verified by construction. Every entry is checked against `EntryPolicy`;
/// one hostile entry fails the whole layer.
///
/// File blobs stored before a later entry fails stay in the store: they are valid content, unreferenced, and
/// eviction reclaims them.
public struct LayerUnpacker: Sendable {
    /// Bounds on what a layer may expand to. Compressed layers can expand without limit (a "zip bomb"); these
    /// bound the disk an untrusted layer can fill.
    public struct Limits: Sendable, Hashable {
        public var maxEntrySize: Int64
        public var maxTotalSize: Int64
        public var maxEntries: Int

        public init(maxEntrySize: Int64 = 16 << 30, maxTotalSize: Int64 = 64 << 30, maxEntries: Int = 1_000_000) {
            self.maxEntrySize = maxEntrySize
            self.maxTotalSize = maxTotalSize
            self.maxEntries = maxEntries
        }
    }

    public let store: any BlobStore
    public let limits: Limits

    public init(store: any BlobStore, limits: Limits = Limits()) {
        self.store = store
        self.limits = limits
    }

    /// Indexes the layer blob at `blobPath`.
    /// - Parameters:
    ///   - layer: the layer's digest (recorded in the index; the blob is assumed verified, as store blobs are).
    ///   - mediaType: the descriptor's media type, when known; a non-tar type is refused.
    /// - Returns: the layer's entries; file contents are in `store`.
    /// - Throws: `TarError`.
    public func index(layer: Digest, blobPath: String, mediaType: String? = nil) throws(TarError) -> LayerIndex {
        if let mediaType, !MediaType.isTarLayer(mediaType) { throw TarError.unsupportedMediaType(mediaType) }
        var info = stat()
        guard stat(blobPath, &info) == 0 else {
            throw TarError.store(.io(operation: "stat", path: blobPath, errno: errno))
        }
        var state = State(blobSize: Int64(info.st_size), reader: try ArchiveReader(path: blobPath))
        defer { state.buffer.deallocate() }
        while let header = try state.reader.next() {
            state.count += 1
            if state.count > limits.maxEntries {
                throw TarError.limitExceeded(path: nil, reason: "more than \(limits.maxEntries) entries")
            }
            try add(header, to: &state)
        }
        try flush(&state)
        var tree: [String: TarEntry] = [:]
        var whiteouts: [TarEntry] = []
        for (key, entry) in state.entries {
            if key.hasPrefix(State.whiteoutKey) { whiteouts.append(entry) } else { tree[key] = entry }
        }
        if let (path, reason) = EntryPolicy.validateTree(tree, whiteouts: whiteouts) {
            throw TarError.hostileEntry(path: path, reason: reason)
        }
        return LayerIndex(layer: layer, entries: state.order.map { state.entries[$0]! })
    }

    /// What indexing has seen so far.
    private struct State {
        /// Whiteouts are keyed apart from the paths they delete (`a/.wh.b` and `a/b` may both appear).
        static let whiteoutKey = "\u{0}"
        let blobSize: Int64
        let reader: ArchiveReader
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        var order: [String] = []  // keys in first-seen order
        var entries: [String: TarEntry] = [:]
        var total: Int64 = 0
        var count = 0
        /// Small files read and hashed but not committed yet: committed together, with one sync (the index is
        /// written only after `flush`).
        var batch: [(expected: Digest, data: Data)] = []
        var batchBytes = 0

        mutating func record(_ key: String, _ entry: TarEntry) {
            if entries.updateValue(entry, forKey: key) == nil { order.append(key) }
        }
    }

    private func add(_ header: ArchiveReader.Header, to state: inout State) throws(TarError) {
        guard let raw = header.rawPath else { throw TarError.hostileEntry(path: "", reason: "entry without a name") }
        if raw.hasPrefix(ArchiveReader.invalidMarker) {
            let shown = String(raw.dropFirst(ArchiveReader.invalidMarker.count))
            throw TarError.hostileEntry(path: shown, reason: "name is not valid UTF-8")
        }
        func hostile(_ reason: String) -> TarError { .hostileEntry(path: raw, reason: reason) }
        let path: String
        do { path = try EntryPolicy.normalise(raw) } catch { throw hostile(error.reason) }
        if header.permissions & 0o6000 != 0 {
            throw hostile("setuid or setgid bit set (mode \(String(header.permissions, radix: 8)))")
        }
        let mode = header.permissions & 0o1777
        let whiteout: EntryPolicy.Whiteout
        do { whiteout = path.isEmpty ? .none : try EntryPolicy.whiteout(path) } catch { throw hostile(error.reason) }
        let isRegular = header.hardlink == nil && header.fileType & ArchiveReader.ifmt == ArchiveReader.ifreg
        if whiteout != .none && !isRegular { throw hostile("whiteout that is not a regular file") }
        if let hardlink = header.hardlink {
            let target: String
            do { target = try EntryPolicy.normalise(hardlink) } catch {
                throw hostile("hard link to '\(hardlink)' outside the layer: \(error.reason)")
            }
            guard let earlier = state.entries[target], earlier.kind == .file || earlier.kind == .hardlink else {
                throw hostile("hard link to '\(hardlink)', which is no earlier file of the layer")
            }
            guard !path.isEmpty else { throw hostile("hard link at the layer root") }
            let original = earlier.kind == .hardlink ? earlier.linkTarget : target
            state.record(
                path,
                TarEntry(
                    path: path, kind: .hardlink, mode: earlier.mode, size: earlier.size, linkTarget: original,
                    mtime: header.mtime, content: earlier.content))
            return
        }

        switch header.fileType & ArchiveReader.ifmt {
        case ArchiveReader.ifdir:
            if path.isEmpty { return }  // the root itself ("./"): the file system supplies it
            state.record(path, TarEntry(path: path, kind: .directory, mode: mode, mtime: header.mtime))

        case ArchiveReader.iflnk:
            guard !path.isEmpty else { throw hostile("symlink at the layer root") }
            guard let target = header.symlink, !target.isEmpty else { throw hostile("symlink without a target") }
            if target.hasPrefix(ArchiveReader.invalidMarker) { throw hostile("symlink target is not valid UTF-8") }
            if target.hasPrefix("/") { throw hostile("symlink target '\(target)' is absolute") }
            // Escapes through `..` are checked once the whole tree is known (`EntryPolicy.validateTree`),
            // since they depend on symlinks that may come later in the archive.
            state.record(
                path, TarEntry(path: path, kind: .symlink, mode: 0o777, linkTarget: target, mtime: header.mtime))

        case ArchiveReader.ifreg:
            guard !path.isEmpty else { throw hostile("file at the layer root") }
            switch whiteout {
            case .whiteout(let deleting):
                let entry = TarEntry(path: deleting, kind: .whiteout, mode: mode, mtime: header.mtime)
                state.record(State.whiteoutKey + "wh:" + deleting, entry)
            case .opaque(let directory):
                let entry = TarEntry(path: directory, kind: .opaqueWhiteout, mode: mode, mtime: header.mtime)
                state.record(State.whiteoutKey + "opq:" + directory, entry)
            case .none:
                try checkSize(header, raw: raw, state: state)
                let stored: StoredBlob
                if let size = header.size, size <= Self.batchedFileSize {
                    stored = try readSmall(raw, size: size, state: &state)
                } else {
                    stored = try copyContent(of: raw, size: header.size, state: state)
                }
                state.total += stored.size
                state.record(
                    path,
                    TarEntry(
                        path: path, kind: .file, mode: mode, size: stored.size, mtime: header.mtime,
                        content: stored.digest))
            }

        case 0o020000: throw hostile("character device node")
        case 0o060000: throw hostile("block device node")
        case 0o010000: throw hostile("FIFO node")
        case 0o140000: throw hostile("socket node")
        case let other: throw hostile("unsupported file type \(String(other, radix: 8))")
        }
    }

    /// Files up to this size are read into memory and committed in batches (a Triton cache is thousands of
    /// small files; two `fsync`s each would cost more than reading the layer).
    static let batchedFileSize: Int64 = 1 << 20

    /// Reads the current entry (known to be `size` bytes) into the batch; flushes the batch when it is large.
    private func readSmall(_ path: String, size: Int64, state: inout State) throws(TarError) -> StoredBlob {
        var data = Data(capacity: Int(size))
        while true {
            let n = try state.reader.readData(into: state.buffer)
            if n == 0 { break }
            if Int64(data.count + n) > size {
                throw TarError.corrupt(path: path, reason: "more data than the \(size) bytes declared")
            }
            data.append(UnsafeRawBufferPointer(rebasing: state.buffer[..<n]).bindMemory(to: UInt8.self))
        }
        guard Int64(data.count) == size else {
            throw TarError.corrupt(path: path, reason: "truncated: \(data.count) of \(size) bytes")
        }
        let digest = SHA256Hasher.digest(data)
        if !store.contains(digest) {
            state.batch.append((digest, data))
            state.batchBytes += data.count
            if state.batch.count >= 4096 || state.batchBytes >= 64 << 20 { try flush(&state) }
        }
        return StoredBlob(digest: digest, size: size, path: "")
    }

    /// Commits the batched small files; any failure fails the layer (no index is written).
    private func flush(_ state: inout State) throws(TarError) {
        guard !state.batch.isEmpty else { return }
        let results = store.commitBatch(state.batch)
        state.batch.removeAll()
        state.batchBytes = 0
        for result in results.values {
            if case .failure(let error) = result { throw TarError.store(error) }
        }
    }

    /// Refuses sizes that cannot be true (past the end of an uncompressed blob) or exceed the limits.
    private func checkSize(_ header: ArchiveReader.Header, raw: String, state: State) throws(TarError) {
        guard let size = header.size else { return }  // unknown: bounded while copying
        if size < 0 { throw TarError.corrupt(path: raw, reason: "negative size \(size)") }
        if state.reader.isUncompressed && size > state.blobSize - header.position {
            throw TarError.corrupt(
                path: raw, reason: "entry of \(size) bytes extends past the end of the \(state.blobSize)-byte layer")
        }
        if size > limits.maxEntrySize {
            throw TarError.limitExceeded(path: raw, reason: "\(size) bytes (limit \(limits.maxEntrySize))")
        }
        if state.total + size > limits.maxTotalSize {
            throw TarError.limitExceeded(path: raw, reason: "layer expands past \(limits.maxTotalSize) bytes")
        }
    }

    /// Streams the current entry into the store, hashing as it goes.
    private func copyContent(of path: String, size: Int64?, state: State) throws(TarError) -> StoredBlob {
        let limit = min(size ?? limits.maxEntrySize, limits.maxTotalSize - state.total)
        let reader = state.reader
        let buffer = state.buffer
        do {
            return try store.ingest(expectedSize: size) { writer in
                while true {
                    let n = try reader.readData(into: buffer)
                    if n == 0 { break }
                    if writer.bytesWritten + Int64(n) > limit {
                        if let size {
                            throw TarError.corrupt(path: path, reason: "more data than the \(size) bytes declared")
                        }
                        throw TarError.limitExceeded(path: path, reason: "entry without a size grows past \(limit)")
                    }
                    try writer.write(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                }
            }
        } catch let error as TarError {
            throw error
        } catch CacheError.sizeMismatch(_, let expected, let actual) {
            throw TarError.corrupt(path: path, reason: "truncated: \(actual) of \(expected) bytes")
        } catch let error as CacheError {
            throw TarError.store(error)
        } catch {
            throw TarError.corrupt(path: path, reason: String(describing: error))
        }
    }
}
