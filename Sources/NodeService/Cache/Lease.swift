import BlobCache
import Foundation
import OCI
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What one running mount (or one `fetch` or `extract` while it runs) needs from the shared cache, so eviction
/// leaves it alone.
public struct Lease: Codable, Sendable, Equatable {
    public var pid: Int32
    /// `mount`, `fetch`, `extract`; nil in leases written before commands other than mounts held one.
    public var command: String?
    /// The mount's mountpoint; nil for a command that mounts nothing.
    public var mountpoint: String?
    public var reference: String
    public var created: Date
    /// Layer digests of the images the holder uses (a named layer protects its whole unit: index and files).
    public var layers: [Digest]
    /// The file contents of the layers indexed so far.
    public var blobs: [Digest]

    public init(
        pid: Int32 = getpid(), command: String = "mount", mountpoint: String?, reference: String,
        created: Date = Date(), layers: [Digest], blobs: [Digest]
    ) {
        self.pid = pid
        self.command = command
        self.mountpoint = mountpoint
        self.reference = reference
        self.created = created
        self.layers = layers
        self.blobs = blobs
    }

    public var digests: Set<Digest> { Set(layers).union(blobs) }

    /// Who holds it, as `cache ls` prints it: `mount /mnt/triton`, `fetch`.
    public var holder: String {
        [command ?? "mount", mountpoint].compactMap { $0 }.joined(separator: " ")
    }
}

/// `<cache>/leases/`: one `<pid>.json` per running mount or fetching command (`<pid>-<n>.json` when a process in
/// another pid namespace sharing the cache already has that name).
///
/// **Liveness is a lock, not a pid.** The owner holds an exclusive `flock` on its lease file for its whole life;
/// the kernel drops it when the process dies, however it dies. So a lease whose lock can be taken is stale, and
/// that holds across pid namespaces (a DaemonSet pod and a host service sharing one cache) and pid reuse, where
/// `kill(pid, 0)` would lie. Stale leases are removed by whoever notices, unlinked only while locked.
///
/// **Consistency.** Writers rewrite a lease, and the evictor reads all of them, under `leases/.lock` (exclusive
/// for both), so eviction never sees a half-written lease, and a holder's lease is on disk before it fetches
/// anything: a concurrent eviction either finished before (the holder then downloads what it lacks) or sees it.
/// Fetching and indexing run under the lock shared (`LeasedLayerProvider`), so no eviction runs between a file
/// blob's ingest and the persisted index that names it.
///
/// Lock order: `leases/.lock`, then a blob's ingest lock or a layer's index lock; never the reverse.
public final class LeaseDirectory: Sendable {
    public let path: String
    var lockPath: String { path + "/.lock" }

    public init(layout: CacheLayout) throws(ServiceError) {
        path = layout.leases
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw .io(operation: "mkdir", path: path, errno: errno) }
        do { try CacheLayout.restrictToOwner(path) } catch {
            guard case .io(let operation, let path, let code) = error else {
                throw .io(operation: "chmod", path: path, errno: EIO)
            }
            throw .io(operation: operation, path: path, errno: code)
        }
    }

    /// Runs `body` holding `leases/.lock` (`exclusive` or shared), waiting for it no longer than the operation's
    /// deadline (`FileLock`).
    /// - Throws: `CacheError.lockTimeout` when someone holds it past the deadline; whatever `body` throws.
    public func withLock<R>(exclusive: Bool = true, _ body: () throws -> R) throws -> R {
        try FileLock.with(path: lockPath, exclusive: exclusive, body)
    }

    /// Creates and locks this process's lease file and writes `lease` into it.
    public func acquire(_ lease: Lease) throws -> HeldLease {
        try withLock {
            var suffix = 0
            while true {
                let name = suffix == 0 ? "\(lease.pid).json" : "\(lease.pid)-\(suffix).json"
                let file = "\(path)/\(name)"
                let fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                if fd < 0 {
                    guard errno == EEXIST else { throw ServiceError.io(operation: "create", path: file, errno: errno) }
                    if removeIfStale(file) { continue }
                    suffix += 1
                    continue
                }
                // Nobody can have locked it yet: it did not exist a moment ago and we hold leases/.lock.
                flock(fd, LOCK_EX)
                let held = HeldLease(directory: self, fd: fd, file: file, lease: lease)
                try held.write(lease)
                return held
            }
        }
    }

    /// Live leases; stale ones found on the way are removed. Call inside `withLock` for a consistent view.
    public func live() -> [Lease] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return [] }
        var result: [Lease] = []
        for name in names.sorted() where name.hasSuffix(".json") {
            let file = "\(path)/\(name)"
            if removeIfStale(file) { continue }
            guard let data = FileManager.default.contents(atPath: file),
                let lease = try? Self.decoder.decode(Lease.self, from: data)
            else { continue }
            result.append(lease)
        }
        return result
    }

    /// Removes leases whose owners are gone (crash leftovers); returns their file names.
    @discardableResult
    public func removeStale() -> [String] {
        (try? withLock {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            return names.sorted().filter { $0.hasSuffix(".json") && removeIfStale("\(path)/\($0)") }
        }) ?? []
    }

    /// Unlinks `file` when no process holds its lock (unlinking while we hold it, so a racing owner notices).
    func removeIfStale(_ file: String) -> Bool {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno == ENOENT }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        unlink(file)
        return true
    }

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}

/// This process's lease: kept locked until `release()` or process exit.
public final class HeldLease: @unchecked Sendable {
    // @unchecked: `current` and `fd` are only touched under `leases/.lock` (exclusive), or in release/deinit.
    private let directory: LeaseDirectory
    private var fd: Int32
    public let file: String
    private var current: Lease
    /// What `current` names, readable without `leases/.lock`: adding what is leased already takes no lock (which
    /// would wait for every other holder of it, downloads included).
    private let leased: Mutex<Set<Digest>>

    init(directory: LeaseDirectory, fd: Int32, file: String, lease: Lease) {
        self.directory = directory
        self.fd = fd
        self.file = file
        self.current = lease
        self.leased = Mutex(lease.digests)
    }

    deinit { release() }

    public var lease: Lease { (try? directory.withLock { current }) ?? current }

    /// Adds digests to the lease (rewriting the file only when something is new).
    public func add(layers: [Digest] = [], blobs: [Digest]) throws {
        guard leased.withLock({ !$0.isSuperset(of: layers) || !$0.isSuperset(of: blobs) }) else { return }
        try directory.withLock {
            var updated = current
            let newLayers = Set(layers).subtracting(updated.layers)
            let newBlobs = Set(blobs).subtracting(updated.blobs)
            guard !newLayers.isEmpty || !newBlobs.isEmpty else { return }
            updated.layers = (updated.layers + newLayers).sorted()
            updated.blobs = (updated.blobs + newBlobs).sorted()
            try write(updated)
        }
    }

    /// Rewrites the file in place (same inode, so our lock stays on it). Call under `leases/.lock`.
    func write(_ lease: Lease) throws {
        let data = Array(try LeaseDirectory.encoder.encode(lease))
        guard ftruncate(fd, 0) == 0 else { throw ServiceError.io(operation: "truncate", path: file, errno: errno) }
        let written = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard written == data.count else { throw ServiceError.io(operation: "write", path: file, errno: errno) }
        current = lease
        leased.withLock { $0 = lease.digests }
    }

    /// Deletes the lease file; its digests become evictable.
    public func release() {
        guard fd >= 0 else { return }
        unlink(file)
        close(fd)
        fd = -1
    }
}
