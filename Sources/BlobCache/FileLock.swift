import Foundation

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
public enum FileLock {
    /// Runs `body` holding an exclusive lock on `path` (created when missing). Not reentrant: locking the same
    /// path again from inside `body` deadlocks, as with any `flock`.
    /// - Throws: `CacheError.io` when the lock file cannot be opened or locked; whatever `body` throws.
    public static func withExclusive<R>(path: String, _ body: () throws -> R) throws -> R {
        let fd = try acquire(path: path, blocking: true)!
        defer { close(fd) }  // closing releases the lock
        return try body()
    }

    /// Opens and locks `path`; nil when `blocking` is false and someone else holds it.
    static func acquire(path: String, blocking: Bool) throws(CacheError) -> Int32? {
        while true {
            let fd = try check(open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600), "open", path)
            let operation = blocking ? LOCK_EX : (LOCK_EX | LOCK_NB)
            if retryingEINTR({ flock(fd, operation) }) != 0 {
                let code = errno
                close(fd)
                if code == EWOULDBLOCK { return nil }
                throw CacheError.io(operation: "flock", path: path, errno: code)
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
}
