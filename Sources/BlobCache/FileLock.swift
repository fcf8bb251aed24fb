import Foundation
import TimeBudget

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An advisory `flock(2)` lock on a lock file, shared by processes and threads alike (each acquisition opens its
/// own file description, so two threads of one process exclude each other too).
///
/// Lock files may be deleted by `DirectoryBlobStore`'s startup cleanup while unlocked. To stay correct under that,
/// an acquirer checks after locking that the path still names the inode it locked, and retries otherwise; the
/// cleaner only unlinks a lock file while holding its lock.
///
/// **Bounded waits.** Nobody waits for a lock longer than the operation's time budget (`Deadline.current`, or
/// `defaultWait` for an operation without one): a holder that never lets go (a stuck process, or anyone who could
/// open the file) turns into `CacheError.lockTimeout`, never a hung FUSE request. Lock files are 0600 in 0700
/// directories of the cache's owner, so other users cannot open them in the first place; an existing lock file
/// with a wider mode is narrowed when its owner opens it.
public enum FileLock {
    /// How long an operation without a deadline of its own (a command, a background publish) waits for a lock:
    /// long enough for another process's index build or publish of a large layer to finish first, and finite.
    public static let defaultWait: Duration = .seconds(300)

    /// Runs `body` holding an exclusive lock on `path` (created when missing). Not reentrant: locking the same
    /// path again from inside `body` deadlocks, as with any `flock`.
    /// - Throws: `CacheError.io` when the lock file cannot be opened or locked; `CacheError.lockTimeout` when it
    ///   is still held by someone else at the operation's deadline; whatever `body` throws.
    public static func withExclusive<R>(path: String, _ body: () throws -> R) throws -> R {
        try with(path: path, exclusive: true, body)
    }

    /// Runs `body` holding a lock on `path`, exclusive or shared (see `withExclusive`).
    public static func with<R>(path: String, exclusive: Bool, _ body: () throws -> R) throws -> R {
        let fd = try acquire(path: path, exclusive: exclusive, until: Deadline.current ?? .after(defaultWait))!
        defer { close(fd) }  // closing releases the lock
        return try body()
    }

    /// Opens and locks `path`, waiting until `deadline`; nil when `deadline` is nil (do not wait) and someone
    /// else holds it.
    static func acquire(path: String, exclusive: Bool = true, until deadline: Deadline?) throws(CacheError) -> Int32? {
        var pause = Duration.milliseconds(1)
        while true {
            let fd = try check(open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600), "open", path)
            narrow(fd)
            if retryingEINTR({ flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) }) != 0 {
                let code = errno
                close(fd)
                guard code == EWOULDBLOCK else { throw CacheError.io(operation: "flock", path: path, errno: code) }
                guard let deadline else { return nil }
                if deadline.hasPassed { throw CacheError.lockTimeout(path: path) }
                // flock(2) has no timeout: poll, backing off to 50 ms, never past the deadline.
                Thread.sleep(forTimeInterval: seconds(min(pause, deadline.remaining)))
                pause = min(pause * 2, .milliseconds(50))
                continue
            }
            var held = stat()
            var named = stat()
            if fstat(fd, &held) == 0, stat(path, &named) == 0, held.st_ino == named.st_ino, held.st_dev == named.st_dev
            {
                return fd
            }
            close(fd)  // the file was unlinked (or replaced) between open and flock: lock the current one
        }
    }

    /// Lock files of earlier versions were 0644: anyone who can reach one could hold it. Its owner narrows it.
    private static func narrow(_ fd: Int32) {
        var info = stat()
        if fstat(fd, &info) == 0, info.st_uid == geteuid(), info.st_mode & 0o077 != 0 { _ = fchmod(fd, 0o600) }
    }

    private static func seconds(_ duration: Duration) -> TimeInterval {
        let parts = duration.components
        return TimeInterval(parts.seconds) + TimeInterval(parts.attoseconds) / 1e18
    }
}
