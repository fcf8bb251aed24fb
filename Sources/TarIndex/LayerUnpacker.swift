import BlobCache
import Foundation
import OCI

/// Reads a layer blob (tar, tar+gzip, tar+zstd; detected from the content, the media type is only checked to be
/// a tar kind) and stores every regular file's bytes in a `BlobStore` as its own content-addressed blob, hashed
/// while copied, so each stored file is verified by construction. Every entry is checked against `EntryPolicy`
/// first; one hostile entry fails the whole layer.
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
    ///   - layer: the layer's digest (recorded in the index; the blob is assumed already verified by the store).
    ///   - mediaType: the descriptor's media type, when known; a non-tar type is refused.
    /// - Returns: the layer's entries; file contents are in `store`.
    /// - Throws: `TarError`.
    public func index(layer: Digest, blobPath: String, mediaType: String? = nil) throws(TarError) -> LayerIndex {
        if let mediaType, !MediaType.isTarLayer(mediaType) { throw TarError.unsupportedMediaType(mediaType) }
        var info = stat()
        guard stat(blobPath, &info) == 0 else {
            throw TarError.store(.io(operation: "stat", path: blobPath, errno: errno))
        }
        let blobSize = Int64(info.st_size)
        let reader = try ArchiveReader(path: blobPath)

        var order: [String] = []  // keys in first-seen order
        var entries: [String: TarEntry] = [:]
        var total: Int64 = 0
        var count = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }

        func record(_ key: String, _ entry: TarEntry) {
            if entries.updateValue(entry, forKey: key) == nil { order.append(key) }
        }

        while let header = try reader.next() {
            count += 1
            if count > limits.maxEntries {
                throw TarError.limitExceeded(path: nil, reason: "more than \(limits.maxEntries) entries")
            }
            guard let raw = header.rawPath else { throw TarError.hostileEntry(path: "", reason: "entry without a name") }
            if raw.hasPrefix(ArchiveReader.invalidMarker) {
                throw TarError.hostileEntry(
                    path: String(raw.dropFirst(ArchiveReader.invalidMarker.count)), reason: "name is not valid UTF-8")
            }
            let path: String
            do { path = try EntryPolicy.normalise(raw) } catch {
                throw TarError.hostileEntry(path: raw, reason: error.reason)
            }
            let type = header.fileType & ArchiveReader.ifmt
            if header.permissions & 0o6000 != 0 {
                throw TarError.hostileEntry(path: raw, reason: "setuid or setgid bit set (mode \(String(header.permissions, radix: 8)))")
            }
            let mode = header.permissions & 0o1777

            if let hardlink = header.hardlink {
                let target: String
                do { target = try EntryPolicy.normalise(hardlink) } catch {
                    throw TarError.hostileEntry(path: raw, reason: "hard link to '\(hardlink)' outside the layer: \(error.reason)")
                }
                guard let earlier = entries[target], earlier.kind == .file || earlier.kind == .hardlink else {
                    throw TarError.hostileEntry(path: raw, reason: "hard link to '\(hardlink)', which is no earlier file of the layer")
                }
                guard !path.isEmpty else { throw TarError.hostileEntry(path: raw, reason: "hard link at the layer root") }
                record(path, TarEntry(path: path, kind: .hardlink, mode: earlier.mode, size: earlier.size,
                    linkTarget: earlier.kind == .hardlink ? earlier.linkTarget : target, mtime: header.mtime,
                    content: earlier.content))
                continue
            }

            switch type {
            case ArchiveReader.ifdir:
                if path.isEmpty { continue }  // the root itself ("./"): the file system supplies it
                let whiteout: EntryPolicy.Whiteout
                do { whiteout = try EntryPolicy.whiteout(path) } catch {
                    throw TarError.hostileEntry(path: raw, reason: error.reason)
                }
                guard whiteout == .none else { throw TarError.hostileEntry(path: raw, reason: "whiteout that is a directory") }
                record(path, TarEntry(path: path, kind: .directory, mode: mode, mtime: header.mtime))

            case ArchiveReader.iflnk:
                guard !path.isEmpty else { throw TarError.hostileEntry(path: raw, reason: "symlink at the layer root") }
                guard let target = header.symlink else {
                    throw TarError.hostileEntry(path: raw, reason: "symlink without a target")
                }
                if target.hasPrefix(ArchiveReader.invalidMarker) {
                    throw TarError.hostileEntry(path: raw, reason: "symlink target is not valid UTF-8")
                }
                if target.hasPrefix("/") {
                    throw TarError.hostileEntry(path: raw, reason: "symlink target '\(target)' is absolute")
                }
                record(path, TarEntry(path: path, kind: .symlink, mode: 0o777, linkTarget: target, mtime: header.mtime))

            case ArchiveReader.ifreg:
                guard !path.isEmpty else { throw TarError.hostileEntry(path: raw, reason: "file at the layer root") }
                let whiteout: EntryPolicy.Whiteout
                do { whiteout = try EntryPolicy.whiteout(path) } catch {
                    throw TarError.hostileEntry(path: raw, reason: error.reason)
                }
                switch whiteout {
                case .whiteout(let deleting):
                    record("\u{0}wh:" + deleting, TarEntry(path: deleting, kind: .whiteout, mode: mode, mtime: header.mtime))
                    continue
                case .opaque(let directory):
                    record("\u{0}opq:" + directory, TarEntry(path: directory, kind: .opaqueWhiteout, mode: mode, mtime: header.mtime))
                    continue
                case .none:
                    break
                }
                let size = header.size
                if let size {
                    if size < 0 { throw TarError.corrupt(path: raw, reason: "negative size \(size)") }
                    if reader.isUncompressed && size > blobSize - header.position {
                        throw TarError.corrupt(path: raw, reason: "entry of \(size) bytes extends past the end of the \(blobSize)-byte layer")
                    }
                    if size > limits.maxEntrySize {
                        throw TarError.limitExceeded(path: raw, reason: "\(size) bytes (limit \(limits.maxEntrySize))")
                    }
                    if total + size > limits.maxTotalSize {
                        throw TarError.limitExceeded(path: raw, reason: "layer expands past \(limits.maxTotalSize) bytes")
                    }
                }
                let stored = try copyContent(of: raw, size: size, from: reader, buffer: buffer, total: total)
                total += stored.size
                record(path, TarEntry(path: path, kind: .file, mode: mode, size: stored.size, mtime: header.mtime,
                    content: stored.digest))

            default:
                let what: String
                switch type {
                case 0o020000: what = "character device"
                case 0o060000: what = "block device"
                case 0o010000: what = "FIFO"
                case 0o140000: what = "socket"
                default: what = "unknown file type \(String(type, radix: 8))"
                }
                throw TarError.hostileEntry(path: raw, reason: "\(what) node")
            }
        }

        var tree: [String: TarEntry] = [:]
        for (key, entry) in entries where !key.hasPrefix("\u{0}") { tree[key] = entry }
        if let (path, reason) = EntryPolicy.validateTree(tree) {
            throw TarError.hostileEntry(path: path, reason: reason)
        }
        return LayerIndex(layer: layer, entries: order.map { entries[$0]! })
    }

    /// Streams the current entry into the store, hashing as it goes.
    private func copyContent(
        of path: String, size: Int64?, from reader: ArchiveReader, buffer: UnsafeMutableRawBufferPointer, total: Int64
    ) throws(TarError) -> StoredBlob {
        let limit = min(size ?? limits.maxEntrySize, limits.maxTotalSize - total)
        do {
            return try store.ingest(expectedSize: size) { writer in
                while true {
                    let n = try reader.readData(into: buffer)
                    if n == 0 { break }
                    if writer.bytesWritten + Int64(n) > limit {
                        if size != nil {
                            throw TarError.corrupt(path: path, reason: "more data than the \(size!) bytes its header declares")
                        }
                        throw TarError.limitExceeded(path: path, reason: "entry without a size grows past \(limit) bytes")
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
