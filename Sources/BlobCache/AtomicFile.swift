import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Small files (indexes, metadata) written crash-safely: temp file in the same directory, `fsync`, `rename`,
/// `fsync` of the directory. Readers see the old file or the new one, never a torn one.
public enum AtomicFile {
    /// Suffix of temp files; a crash may leave one behind (`removeStaleTemps` clears them).
    public static let tempSuffix = ".tmp"

    /// Replaces `path` with `data` atomically and durably.
    /// - Throws: `CacheError.io`.
    public static func write(_ data: Data, to path: String) throws(CacheError) {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let temp = "\(directory)/.\(name).\(uniqueSuffix())\(tempSuffix)"
        let fd = try check(open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644), "create", temp)
        var renamed = false
        defer {
            close(fd)
            if !renamed { unlink(temp) }
        }
        do {
            try data.withUnsafeBytes { try writeAll(fd, $0, path: temp) }
        } catch {
            throw error as! CacheError  // writeAll throws nothing else; withUnsafeBytes erases the type
        }
        try check(retryingEINTR { fsync(fd) }, "fsync", temp)
        try check(rename(temp, path), "rename", temp)
        renamed = true
        try syncDirectory(directory)
    }

    /// `mkdir -p` (mode 0700 for what it creates).
    public static func makeDirectory(_ path: String) throws(CacheError) {
        try makeDirectories(path)
    }

    /// Removes temp files older than `age` seconds in `directory` (leftovers of a crash between create and rename).
    public static func removeStaleTemps(in directory: String, olderThan age: TimeInterval = 3600) {
        guard let names = try? directoryEntries(directory) else { return }
        let cutoff = Date().timeIntervalSince1970 - age
        for name in names where name.hasPrefix(".") && name.hasSuffix(tempSuffix) {
            var info = stat()
            let path = "\(directory)/\(name)"
            if lstat(path, &info) == 0, Double(info.st_mtim.tv_sec) < cutoff { unlink(path) }
        }
    }
}
