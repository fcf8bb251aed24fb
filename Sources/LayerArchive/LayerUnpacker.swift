import BlobCache
import ContentHash
import Foundation
import OCI

/// Reads a layer (tar, tar+gzip, tar+zstd; detected from the content, the media type is only checked to be a tar
/// kind) and writes every regular file's bytes into the layer's pack (`PackWriter`): one file for the whole layer,
/// each distinct content once, hashed while copied so that the index names every content by its sha256 and where
/// it lies. Every entry is checked against `EntryPolicy`; one hostile entry fails the whole layer, and its pack is
/// removed unwritten.
///
/// From a file (`index(layer:blobPath:)`, the pack committed before returning) or from a stream of the layer's
/// bytes as they arrive (`stream(layer:mediaType:)`, `LayerStream`).
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

    /// Indexes the layer blob at `blobPath` and commits its pack.
    /// - Parameters:
    ///   - layer: the layer's digest (the pack's name; the blob is assumed verified, as store blobs are).
    ///   - mediaType: the descriptor's media type, when known; a non-tar type is refused.
    /// - Returns: the layer's entries; file contents are in the pack, at `index.pack`'s offsets.
    /// - Throws: `TarError`.
    public func index(layer: Digest, blobPath: String, mediaType: String? = nil) throws(TarError) -> LayerIndex {
        if let mediaType, !MediaType.isTarLayer(mediaType) { throw TarError.unsupportedMediaType(mediaType) }
        var info = stat()
        guard stat(blobPath, &info) == 0 else {
            throw TarError.store(.io(operation: "stat", path: blobPath, errno: errno))
        }
        let unpacked = try unpack(
            layer: layer, reader: try ArchiveReader(path: blobPath), blobSize: Int64(info.st_size),
            into: try createPack(for: layer))
        do { _ = try unpacked.pack.commit() } catch {
            unpacked.pack.abort()
            throw TarError.store(error)
        }
        return unpacked.index
    }

    /// A new pack for `layer` (removed unless committed).
    func createPack(for layer: Digest) throws(TarError) -> PackWriter {
        do { return try store.createPack(for: layer) } catch { throw TarError.store(Self.cacheError(error)) }
    }

    /// A layer read from `reader` into `pack`, not yet committed.
    func unpack(
        layer: Digest, reader: ArchiveReader, blobSize: Int64?, into pack: PackWriter
    ) throws(TarError) -> UnpackedLayer {
        var state = State(blobSize: blobSize, reader: reader, pack: pack)
        var succeeded = false
        defer {
            state.buffer.deallocate()
            if !succeeded { pack.abort() }  // now, not when the last reference goes
        }
        while let header = try state.reader.next() {
            state.count += 1
            if state.count > limits.maxEntries {
                throw TarError.limitExceeded(path: nil, reason: "more than \(limits.maxEntries) entries")
            }
            try add(header, to: &state)
        }
        var tree: [String: TarEntry] = [:]
        var whiteouts: [TarEntry] = []
        for (key, entry) in state.entries {
            if key.hasPrefix(State.whiteoutKey) { whiteouts.append(entry) } else { tree[key] = entry }
        }
        if let (path, violation) = EntryPolicy.validateTree(tree, whiteouts: whiteouts) {
            throw TarError.hostileEntry(path: path, reason: "\(violation)")
        }
        let index = LayerIndex(
            layer: layer, entries: state.order.map { state.entries[$0]! },
            pack: PackLayout(size: pack.size, offsets: state.offsets))
        succeeded = true
        return UnpackedLayer(index: index, pack: pack)
    }

    static func cacheError(_ error: any Error) -> CacheError {
        error as? CacheError ?? .io(operation: "pack", path: "", errno: EIO)
    }

    /// What indexing has seen so far.
    private struct State {
        /// Whiteouts are keyed apart from the paths they delete (`a/.wh.b` and `a/b` may both appear).
        static let whiteoutKey = "\u{0}"
        /// The compressed-or-not blob's size, when reading a file (bounds an uncompressed layer's entries).
        let blobSize: Int64?
        let reader: ArchiveReader
        let pack: PackWriter
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 64)
        var order: [String] = []  // keys in first-seen order
        var entries: [String: TarEntry] = [:]
        /// Where each content starts in the pack (the first copy; later ones are not stored).
        var offsets: [Digest: Int64] = [:]
        var total: Int64 = 0
        var count = 0

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
        do { path = try EntryPolicy.normalise(raw) } catch { throw hostile("\(error)") }
        if header.permissions & 0o6000 != 0 {
            throw hostile("setuid or setgid bit set (mode \(String(header.permissions, radix: 8)))")
        }
        let mode = header.permissions & 0o1777
        let whiteout: EntryPolicy.Whiteout
        do { whiteout = path.isEmpty ? .none : try EntryPolicy.whiteout(path) } catch { throw hostile("\(error)") }
        let isRegular = header.hardlink == nil && header.fileType & ArchiveReader.ifmt == ArchiveReader.ifreg
        if whiteout != .none && !isRegular { throw hostile("whiteout that is not a regular file") }
        if let hardlink = header.hardlink {
            let target: String
            do { target = try EntryPolicy.normalise(hardlink) } catch {
                throw hostile("hard link to '\(hardlink)' outside the layer: \(error)")
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
                let (digest, size) = try pack(raw, size: header.size, state: &state)
                state.total += size
                state.record(
                    path,
                    TarEntry(path: path, kind: .file, mode: mode, size: size, mtime: header.mtime, content: digest))
            }

        case 0o020000: throw hostile("character device node")
        case 0o060000: throw hostile("block device node")
        case 0o010000: throw hostile("FIFO node")
        case 0o140000: throw hostile("socket node")
        case let other: throw hostile("unsupported file type \(String(other, radix: 8))")
        }
    }

    /// Refuses sizes that cannot be true (past the end of an uncompressed blob) or exceed the limits.
    private func checkSize(_ header: ArchiveReader.Header, raw: String, state: State) throws(TarError) {
        guard let size = header.size else { return }  // unknown: bounded while copying
        if size < 0 { throw TarError.corrupt(path: raw, reason: "negative size \(size)") }
        if let blobSize = state.blobSize, state.reader.isUncompressed, size > blobSize - header.position {
            throw TarError.corrupt(
                path: raw, reason: "entry of \(size) bytes extends past the end of the \(blobSize)-byte layer")
        }
        if size > limits.maxEntrySize {
            throw TarError.limitExceeded(path: raw, reason: "\(size) bytes (limit \(limits.maxEntrySize))")
        }
        if state.total + size > limits.maxTotalSize {
            throw TarError.limitExceeded(path: raw, reason: "layer expands past \(limits.maxTotalSize) bytes")
        }
    }

    /// Copies the current entry into the pack, hashing it as it goes; a content the pack holds already is dropped
    /// again (identical files are stored once).
    /// - Returns: the content's digest and size.
    private func pack(_ path: String, size: Int64?, state: inout State) throws(TarError) -> (Digest, Int64) {
        let limit = min(size ?? limits.maxEntrySize, limits.maxTotalSize - state.total)
        let start = state.pack.size
        var hasher = SHA256Hasher()
        var copied: Int64 = 0
        do {
            while true {
                let n = try state.reader.readData(into: state.buffer)
                if n == 0 { break }
                if copied + Int64(n) > limit {
                    if let size {
                        throw TarError.corrupt(path: path, reason: "more data than the \(size) bytes declared")
                    }
                    throw TarError.limitExceeded(path: path, reason: "entry without a size grows past \(limit)")
                }
                let bytes = UnsafeRawBufferPointer(rebasing: state.buffer[..<n])
                hasher.update(bytes)
                try state.pack.append(bytes)
                copied += Int64(n)
            }
            if let size, copied != size {
                throw TarError.corrupt(path: path, reason: "truncated: \(copied) of \(size) bytes")
            }
            let digest = hasher.finalize()
            if state.offsets[digest] != nil {
                try state.pack.truncate(to: start)
            } else {
                state.offsets[digest] = start
            }
            return (digest, copied)
        } catch let error as TarError {
            throw error
        } catch {
            throw TarError.store(Self.cacheError(error))
        }
    }
}

/// A layer unpacked into a pack not yet committed: the index, and the pack to serve from (`PackWriter.map`) and
/// then commit.
public struct UnpackedLayer: Sendable {
    public var index: LayerIndex
    public let pack: PackWriter
}
