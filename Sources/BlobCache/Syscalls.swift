import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Turns a C return code into a `CacheError.io`, capturing `errno` at the call site (STYLE §3).
@discardableResult
func check(_ result: Int32, _ operation: String, _ path: String) throws(CacheError) -> Int32 {
    if result < 0 { throw CacheError.io(operation: operation, path: path, errno: errno) }
    return result
}

/// Retries a system call interrupted by a signal: libfuse worker threads do see EINTR.
func retryingEINTR(_ call: () -> Int32) -> Int32 {
    while true {
        let result = call()
        if result >= 0 || errno != EINTR { return result }
    }
}

/// Writes all of `bytes` to `fd`, following partial writes.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(CacheError) {
    guard var base = bytes.baseAddress else { return }
    var remaining = bytes.count
    while remaining > 0 {
        let n = Glibc.write(fd, base, remaining)
        if n < 0 {
            if errno == EINTR { continue }
            throw CacheError.io(operation: "write", path: path, errno: errno)
        }
        remaining -= n
        base = base.advanced(by: n)
    }
}

/// `mkdir -p` with mode 0700 for the parts it creates.
func makeDirectories(_ path: String) throws(CacheError) {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, 0o700) != 0 && errno != EEXIST {
            throw CacheError.io(operation: "mkdir", path: current, errno: errno)
        }
    }
    var info = stat()
    try check(stat(path, &info), "stat", path)
    guard info.st_mode & S_IFMT == S_IFDIR else {
        throw CacheError.invalidCacheDirectory(path: path, reason: "not a directory")
    }
}

/// Makes a rename or unlink in `directory` durable: without it a crash after `rename` may lose the entry.
func syncDirectory(_ directory: String) throws(CacheError) {
    let fd = try check(open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", directory)
    defer { close(fd) }
    try check(retryingEINTR { fsync(fd) }, "fsync", directory)
}

/// A random suffix for temp names, unique across processes and threads.
func uniqueSuffix() -> String {
    "\(getpid()).\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
}

/// Entries of a directory, `.` and `..` excluded.
func directoryEntries(_ path: String) throws(CacheError) -> [String] {
    guard let dir = opendir(path) else { throw CacheError.io(operation: "opendir", path: path, errno: errno) }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}
