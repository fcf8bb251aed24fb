import Foundation
import OCI

#if canImport(Glibc)
    import Glibc
#endif

/// Writes a layer's pack: every distinct file content of an unpacked layer, back to back in one file, so that a
/// whole-layer image costs one file and one sync instead of one blob (and two syncs) per file. The unpacker hashes
/// each content as it appends it and records where it lies; the layer's index names the pack by the layer's digest
/// and each content by its sha256 and offset (`DirectoryBlobStore` documents the layout).
///
/// Crash-safe like a blob: written to a temp file in `ingest/`, locked by its writer; `commit` syncs it and renames
/// it into `packs/sha256/<layer hex>`, then syncs that directory. Until then the pack can already be read (`map`),
/// which is how a mount serves a layer as soon as its digest verifies, with the sync off the read path.
///
/// One owner at a time: the unpacker appends on its thread, then hands the writer on (to map it and to commit it
/// in the background). Not for concurrent use.
public final class PackWriter: @unchecked Sendable {
    public let layer: Digest
    private let fd: Int32
    private let temp: String
    private let final: String
    private let directory: String
    private var buffer = [UInt8]()
    private var flushed: Int64 = 0
    private var finished = false
    static let bufferSize = 1 << 20

    init(layer: Digest, fd: Int32, temp: String, final: String, directory: String) {
        self.layer = layer
        self.fd = fd
        self.temp = temp
        self.final = final
        self.directory = directory
        buffer.reserveCapacity(Self.bufferSize)
    }

    deinit {
        if !finished { unlink(temp) }  // while still holding its flock, so the stale-file cleaner never races us
        close(fd)
    }

    /// Bytes appended so far: the offset the next content starts at.
    public var size: Int64 { flushed + Int64(buffer.count) }

    /// Appends `bytes` (buffered; written in large blocks).
    public func append(_ bytes: UnsafeRawBufferPointer) throws(CacheError) {
        if buffer.count + bytes.count > Self.bufferSize { try flush() }
        if bytes.count >= Self.bufferSize {
            try writeAll(fd, bytes, path: temp)
            flushed += Int64(bytes.count)
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    /// Drops what was appended after `offset` (a content that turned out, once hashed, to be in the pack already).
    public func truncate(to offset: Int64) throws(CacheError) {
        precondition(offset <= size, "truncating a pack past its end")
        if offset >= flushed {
            buffer.removeLast(Int(size - offset))
            return
        }
        buffer.removeAll(keepingCapacity: true)
        try check(ftruncate(fd, off_t(offset)), "ftruncate", temp)
        guard lseek(fd, off_t(offset), SEEK_SET) >= 0 else {
            throw CacheError.io(operation: "lseek", path: temp, errno: errno)
        }
        flushed = offset
    }

    /// Writes out what is buffered and maps the pack as it is now, for reads before (and after) the commit.
    public func map() throws(CacheError) -> MappedFile {
        try flush()
        return try MappedFile(descriptor: fd, path: temp)
    }

    /// Makes the pack durable under its final name (`packs/sha256/<layer hex>`), replacing an older one.
    /// - Returns: the final path.
    public func commit() throws(CacheError) -> String {
        guard !finished else { throw CacheError.io(operation: "commit", path: temp, errno: EBADF) }
        try flush()
        try check(fchmod(fd, 0o444), "fchmod", temp)
        try check(retryingEINTR { fsync(fd) }, "fsync", temp)
        try check(rename(temp, final), "rename", temp)
        finished = true
        try syncDirectory(directory)
        return final
    }

    /// Removes the pack now (its writer failed); nothing of it is kept. Idempotent.
    public func abort() {
        guard !finished else { return }
        finished = true
        unlink(temp)  // still under our flock, as in deinit
    }

    private func flush() throws(CacheError) {
        guard !buffer.isEmpty else { return }
        do {
            try buffer.withUnsafeBytes { try writeAll(fd, $0, path: temp) }
        } catch {
            throw error as! CacheError  // writeAll throws nothing else; withUnsafeBytes erases the type
        }
        flushed += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }
}

extension DirectoryBlobStore {
    /// Where the committed pack of `layer` is, when there is one.
    public func packPath(for layer: Digest) -> String? {
        let path = packFile(layer)
        return access(path, F_OK) == 0 ? path : nil
    }

    /// Starts a pack for `layer` in `ingest/`; it is removed unless committed.
    public func createPack(for layer: Digest) throws(CacheError) -> PackWriter {
        let (fd, temp) = try createTemp(label: "pack-" + layer.hex)
        return PackWriter(layer: layer, fd: fd, temp: temp, final: packFile(layer), directory: packsDirectory)
    }

    func packFile(_ layer: Digest) -> String { layout.pack(of: layer) }
}
