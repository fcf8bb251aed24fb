import Foundation
import Glibc

/// A scratch directory of one operation: a publish's staging copy, a compaction's export, a push's build.
///
/// A node's operations (`make(_:in:)`) keep it under the cache directory's `work/`, on the cache's filesystem rather
/// than a `/tmp` that may be memory, since what a publish stages can be gigabytes. The operation removes it when it
/// ends, failed or not; one killed meanwhile cannot, so each directory's owner holds `work/<name>.lock` for the
/// directory's life, and the next operation that makes one removes every directory whose lock nobody holds. A lock,
/// not a pid: a DaemonSet's daemon is PID 1 in its namespace and another pid seen from the host, and a pid is reused.
/// `work/.lock` orders making and sweeping, so a directory is never swept between its creation and its lock.
///
/// A command run by hand (`temporary(_:)`) uses `$TMPDIR`, as any command-line tool: it needs no cache directory.
public final class WorkDirectory {
    public let path: String
    /// The lock held while the directory exists; nil for a temporary one.
    private var lock: (path: String, fd: Int32)?

    public var url: URL { URL(fileURLWithPath: path, isDirectory: true) }

    private init(path: String, lock: (path: String, fd: Int32)?) {
        self.path = path
        self.lock = lock
    }

    deinit { remove() }

    /// Makes a fresh directory for `purpose` under `layout.work`, first removing those their operations left.
    /// - Throws: `CacheError` when `work/` or the directory cannot be made or locked.
    public static func make(_ purpose: String, in layout: CacheLayout) throws -> WorkDirectory {
        try makeDirectories(layout.work)
        return try FileLock.withExclusive(path: layout.work + "/.lock") {
            sweep(layout.work)
            let name = "\(getpid())-\(purpose)-\(UUID().uuidString)"
            let lockPath = layout.work + "/" + name + ".lock"
            guard let fd = try FileLock.acquire(path: lockPath, until: nil) else {
                throw CacheError.lockTimeout(path: lockPath)
            }
            let path = layout.work + "/" + name
            guard mkdir(path, 0o700) == 0 else {
                let code = errno
                unlink(lockPath)
                close(fd)
                throw CacheError.io(operation: "mkdir", path: path, errno: code)
            }
            return WorkDirectory(path: path, lock: (lockPath, fd))
        }
    }

    /// Makes a fresh private directory for `purpose` in `$TMPDIR`.
    public static func temporary(_ purpose: String) throws -> WorkDirectory {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mcvfs-\(purpose)-\(UUID())").path
        guard mkdir(path, 0o700) == 0 else { throw CacheError.io(operation: "mkdir", path: path, errno: errno) }
        return WorkDirectory(path: path, lock: nil)
    }

    /// Removes the directory and everything in it, then its lock. Once; later calls do nothing.
    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
        if let lock {
            unlink(lock.path)  // while holding it: an acquirer checks the path still names what it locked
            close(lock.fd)
            self.lock = nil
        }
    }

    /// Removes the directories in `work` whose lock nobody holds, and their locks. Called holding `work/.lock`.
    static func sweep(_ work: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: work) else { return }
        let locks = Set(names.filter { $0.hasSuffix(".lock") && $0 != ".lock" })
        for name in names where !name.hasSuffix(".lock") {
            if locks.contains(name + ".lock") { continue }
            // No lock: made before its owner locked it cannot be (both happen under `work/.lock`), so left by a
            // sweep or removal cut short.
            try? FileManager.default.removeItem(atPath: work + "/" + name)
        }
        for lock in locks {
            let lockPath = work + "/" + lock
            guard let fd = try? FileLock.acquire(path: lockPath, until: nil) else { continue }
            try? FileManager.default.removeItem(atPath: work + "/" + lock.dropLast(".lock".count))
            unlink(lockPath)
            close(fd)
        }
    }
}
