import Foundation
import Glibc

/// A scratch directory of one operation (a publish's staging copy, a compaction's export, a push's build) under the
/// cache directory's `work/`, on the cache's filesystem rather than a `/tmp` that may be memory: what a publish
/// stages can be gigabytes. Named `<pid>-<purpose>-<uuid>`, 0700. The operation removes it when it ends; one whose
/// process was killed mid-operation is removed by the next operation that makes one.
public struct WorkDirectory: Sendable {
    public let path: String
    public var url: URL { URL(fileURLWithPath: path, isDirectory: true) }

    /// How old a directory of a process that is gone must be before it is removed: a process in another PID
    /// namespace (a DaemonSet's) looks gone from the host, and its operations end well within this.
    static let staleAge: TimeInterval = 3600

    /// Makes a fresh directory for `purpose` (letters and `-`), first removing those of processes that are gone.
    /// - Throws: `CacheError.io` when the directory cannot be made.
    public static func make(_ purpose: String, in layout: CacheLayout) throws(CacheError) -> WorkDirectory {
        sweep(layout.work)
        try makeDirectories(layout.work)
        let path = layout.work + "/\(getpid())-\(purpose)-\(UUID().uuidString)"
        guard mkdir(path, 0o700) == 0 else { throw .io(operation: "mkdir", path: path, errno: errno) }
        return WorkDirectory(path: path)
    }

    /// Removes the directory and everything in it.
    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// Removes the directories of processes that are gone, once they are `staleAge` old.
    static func sweep(_ work: String, now: Date = Date()) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: work) else { return }
        for name in names {
            guard let pid = name.split(separator: "-").first.flatMap({ pid_t($0) }), pid > 0, !isAlive(pid) else {
                continue
            }
            let path = work + "/" + name
            guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                now.timeIntervalSince(modified) >= staleAge
            else { continue }
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    /// Whether a process with this pid exists (in this PID namespace); EPERM means it does, owned by another user.
    static func isAlive(_ pid: pid_t) -> Bool { kill(pid, 0) == 0 || errno == EPERM }
}
