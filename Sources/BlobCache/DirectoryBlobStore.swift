import Foundation
import OCI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A `BlobStore` in a directory, laid out like an OCI image layout's blob tree: committed blobs, packs and the
/// ingest directory where `CacheLayout` puts them (the one description of the cache directory's tree). Blobs are
/// read-only once committed; temp files in ingest are each `flock`-ed by their writer.
///
/// A pack is named by the layer it was unpacked from (its own bytes need no second hash: each content in it was
/// hashed as it was written, and the layer's index names them by digest and offset). For accounting and eviction
/// it is part of its layer: `list` reports it under the layer's digest (with the layer blob's size, when that is
/// kept too), and `remove` of the layer's digest removes both.
///
/// Commit protocol (the one crash-safe order): write to a temp file in `ingest/` (same file system), hash while
/// writing, `fsync` it, compare digest and size, `rename` into `blobs/sha256/`, `fsync` that directory. A crash
/// at any point leaves either no blob or a complete verified one; temp files left behind are removed by the next
/// `init`.
///
/// The store keeps no in-memory state: the directory is the state, shared by every process using it, so the
/// class is trivially `Sendable`.
public final class DirectoryBlobStore: BlobStore {
    public let layout: CacheLayout
    var blobsDirectory: String { layout.blobs }
    var packsDirectory: String { layout.packs }
    var ingestDirectory: String { layout.ingest }

    /// Opens (creating when missing) the store in `layout` and removes what crashed writers left in `ingest/`.
    /// - Throws: `CacheError.io` when its directories cannot be created.
    public init(layout: CacheLayout) throws(CacheError) {
        self.layout = layout
        try makeDirectories(layout.blobs)
        try CacheLayout.restrictToOwner(layout.root)
        try makeDirectories(layout.packs)
        try makeDirectories(layout.ingest)
        try removeStaleIngestFiles()
    }

    /// The store of the cache directory at `root`.
    /// - Throws: `CacheError.invalidCacheDirectory` for a relative path; `CacheError.io` when it cannot be created.
    public convenience init(root: URL) throws(CacheError) {
        try self.init(layout: CacheLayout(root: root.path))
    }

    /// The cache directory.
    public var root: URL { layout.rootURL }

    // MARK: Reading

    public func contains(_ digest: Digest) -> Bool {
        access(blobPath(digest), F_OK) == 0
    }

    public func path(for digest: Digest) -> String? {
        let path = blobPath(digest)
        return access(path, F_OK) == 0 ? path : nil
    }

    public func size(of digest: Digest) throws(CacheError) -> Int64 {
        var info = stat()
        let path = blobPath(digest)
        if stat(path, &info) != 0 {
            if errno == ENOENT { throw CacheError.notFound(digest) }
            throw CacheError.io(operation: "stat", path: path, errno: errno)
        }
        return Int64(info.st_size)
    }

    public func open(_ digest: Digest) throws(CacheError) -> BlobHandle {
        try BlobHandle(digest: digest, path: blobPath(digest))
    }

    /// Records a use of the blob (sets its access time to now) for least-recently-used eviction, since
    /// `relatime` mounts do not update it on every read.
    public func touch(_ digest: Digest) throws(CacheError) {
        // UTIME_NOW / UTIME_OMIT from <sys/stat.h>: macros Swift does not import.
        var times = [timespec(tv_sec: 0, tv_nsec: (1 << 30) - 1), timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2)]
        var found = false
        for path in [blobPath(digest), packFile(digest)] {
            if utimensat(AT_FDCWD, path, &times, 0) == 0 {
                found = true
            } else if errno != ENOENT {
                throw CacheError.io(operation: "utimensat", path: path, errno: errno)
            }
        }
        if !found { throw CacheError.notFound(digest) }
    }

    // MARK: Ingest

    public func ingest(
        _ expected: Digest, expectedSize: Int64?, _ produce: (BlobWriter) throws -> Void
    ) throws -> String {
        try write(expected: expected, expectedSize: expectedSize, produce).path
    }

    public func ingest(expectedSize: Int64?, _ produce: (BlobWriter) throws -> Void) throws -> StoredBlob {
        try write(expected: nil, expectedSize: expectedSize, produce)
    }

    /// Copies the file at `path` into the store, hashing it; commits only when it matches `expected` (if given).
    /// The source is left as it is.
    /// - Throws: `CacheError.io` when the source cannot be read; as `ingest`.
    @discardableResult
    public func ingest(fileAt path: String, expected: Digest? = nil) throws -> StoredBlob {
        let fd = try check(Glibc.open(path, O_RDONLY | O_CLOEXEC), "open", path)
        defer { close(fd) }
        var info = stat()
        try check(fstat(fd, &info), "fstat", path)
        let size = Int64(info.st_size)
        return try write(expected: expected, expectedSize: size) { writer in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw CacheError.io(operation: "read", path: path, errno: errno)
                }
                if n == 0 { break }
                try writer.write(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            }
        }
    }

    public func withIngestLock<R>(_ digest: Digest, _ body: () throws -> R) throws -> R {
        try FileLock.withExclusive(path: "\(ingestDirectory)/\(digest.hex).lock", body)
    }

    private func write(
        expected: Digest?, expectedSize: Int64?, _ produce: (BlobWriter) throws -> Void
    ) throws -> StoredBlob {
        let pending = try beginIngest(expected, expectedSize: expectedSize)
        try produce(pending.writer)
        return try pending.commit()
    }

    /// Creates a fresh temp file in `ingest/`, locked by this writer for its lifetime.
    func createTemp(label: String) throws(CacheError) -> (Int32, String) {
        while true {
            let path = "\(ingestDirectory)/\(label).\(uniqueSuffix()).tmp"
            let fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd < 0 {
                if errno == EEXIST { continue }
                throw CacheError.io(operation: "create", path: path, errno: errno)
            }
            if retryingEINTR({ flock(fd, LOCK_EX) }) != 0 {
                let code = errno
                unlink(path)
                close(fd)
                throw CacheError.io(operation: "flock", path: path, errno: code)
            }
            // The startup cleaner of another process may have locked and unlinked the file between our
            // open and flock (it unlinks only what it holds locked): then start over with a new name.
            var info = stat()
            if fstat(fd, &info) == 0, info.st_nlink > 0 { return (fd, path) }
            close(fd)
        }
    }

    // MARK: Eviction and accounting

    /// Removes the blob and the pack unpacked from it; false when neither was there.
    @discardableResult
    public func remove(_ digest: Digest) throws(CacheError) -> Bool {
        var removed = false
        for (path, directory) in [(blobPath(digest), blobsDirectory), (packFile(digest), packsDirectory)] {
            if unlink(path) != 0 {
                if errno == ENOENT { continue }
                throw CacheError.io(operation: "unlink", path: path, errno: errno)
            }
            try syncDirectory(directory)
            removed = true
        }
        return removed
    }

    /// Every blob, and every pack under its layer's digest (one entry per digest: sizes added, newest access).
    public func list() throws(CacheError) -> [BlobInfo] {
        var result: [Digest: BlobInfo] = [:]
        for directory in [blobsDirectory, packsDirectory] {
            for name in try directoryEntries(directory) {
                guard let digest = try? Digest(hex: name) else { continue }  // not ours; leave it alone
                var info = stat()
                if stat("\(directory)/\(name)", &info) != 0 { continue }  // removed meanwhile
                guard info.st_mode & S_IFMT == S_IFREG else { continue }
                let atime = Date(
                    timeIntervalSince1970: Double(info.st_atim.tv_sec) + Double(info.st_atim.tv_nsec) / 1e9)
                let entry = BlobInfo(digest: digest, size: Int64(info.st_size), lastAccess: atime)
                result[digest] =
                    result[digest].map {
                        BlobInfo(digest: digest, size: $0.size + entry.size, lastAccess: max($0.lastAccess, atime))
                    } ?? entry
            }
        }
        return result.values.sorted { $0.digest < $1.digest }
    }

    // MARK: Crash leftovers

    /// Removes temp files of dead writers and idle lock files. A live writer holds its temp file's flock for as
    /// long as it writes, and the kernel drops the lock when a process dies, so a temp file we can lock without
    /// waiting is a leftover. Anything unlinked here is unlinked while we hold its lock (see `FileLock`).
    func removeStaleIngestFiles() throws(CacheError) {
        for name in try directoryEntries(ingestDirectory) {
            let path = "\(ingestDirectory)/\(name)"
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            guard info.st_mode & S_IFMT == S_IFREG else { continue }
            guard let fd = try? FileLock.acquire(path: path, until: nil) else { continue }  // in use
            unlink(path)
            close(fd)
        }
    }

    func blobPath(_ digest: Digest) -> String { layout.blob(digest) }
}
