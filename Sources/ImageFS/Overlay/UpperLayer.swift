import Foundation
import Glibc

/// One writer's upper directory on local disk: the only place an overlay writes.
///
/// Every path is walked one component at a time with `O_NOFOLLOW`, and every final operation is `*at` on the
/// parent's descriptor without following links, so a symlink a user planted in the upper can never make the
/// daemon (root) touch anything outside it. Deletions of lower entries are recorded as OCI-style whiteout
/// files (`.wh.<name>`, `.wh..wh..opq`), names the overlay refuses to let users create.
final class UpperLayer: Sendable {
    static let whiteoutPrefix = ".wh."
    static let opaqueMarker = ".wh..wh..opq"
    /// Scratch space for copy-up and shadow writes, on the same filesystem so `rename` publishes atomically.
    static let workDirectory = ".mcvfs-work"

    let root: String
    let owner: (uid: UInt32, gid: UInt32)

    init(root: String, owner: (uid: UInt32, gid: UInt32)) throws(FSError) {
        self.root = root
        self.owner = owner
        for directory in [root, root + "/" + Self.workDirectory] where mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw .unavailable(reason: "cannot create upper directory \(directory): \(Self.lastError())")
        }
        chown(root, owner.uid, owner.gid)
        Self.clearWork(root + "/" + Self.workDirectory)
    }

    /// Temp files of writes a crash interrupted were never published: they are garbage.
    private static func clearWork(_ path: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            unlink(path + "/" + name)
        }
    }

    static func lastError() -> String { String(cString: strerror(errno)) }

    static func isReserved(_ name: String) -> Bool {
        name.hasPrefix(whiteoutPrefix) || name == workDirectory
    }

    // MARK: Walking

    /// Opens directory `components` below the root, optionally creating missing ones (owned by the writer);
    /// nil when it does not exist (or is not a directory).
    func openDirectory(_ components: [String], create: Bool = false, mode: (Int) -> UInt32 = { _ in 0o755 })
        throws(FSError) -> Int32?
    {
        var fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .unavailable(reason: "open \(root): \(Self.lastError())") }
        for (depth, name) in components.enumerated() {
            var next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 && errno == ENOENT && create {
                if mkdirat(fd, name, mode(depth)) != 0 && errno != EEXIST {
                    close(fd)
                    throw .unavailable(reason: "mkdir in upper: \(Self.lastError())")
                }
                fchownat(fd, name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW)
                next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            close(fd)
            guard next >= 0 else {
                if errno == ENOENT || errno == ENOTDIR || errno == ELOOP { return nil }
                throw .unavailable(reason: "open upper directory: \(Self.lastError())")
            }
            fd = next
        }
        return fd
    }

    /// Runs `body` with the descriptor of `path`'s parent and its last name.
    func inParent<R>(of path: [String], create: Bool = false, _ body: (Int32, String) throws(FSError) -> R)
        throws(FSError) -> R?
    {
        guard let name = path.last, let fd = try openDirectory(Array(path.dropLast()), create: create) else {
            return nil
        }
        defer { close(fd) }
        return try body(fd, name)
    }

    // MARK: Queries

    /// What the upper says about `path`, found in one walk: its entry, if any, and whether it hides the image's
    /// entry at the same path (a whiteout of the path or of a directory above it, an opaque directory above it,
    /// or a non-directory above it).
    struct Probe {
        var hidesLower: Bool
        var info: stat?
    }

    func probe(_ path: [String]) throws(FSError) -> Probe {
        var info = stat()
        if path.isEmpty { return Probe(hidesLower: false, info: lstat(root, &info) == 0 ? info : nil) }
        var fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .unavailable(reason: "open \(root): \(Self.lastError())") }
        defer { close(fd) }
        var hides = false
        for (depth, name) in path.enumerated() {
            if fstatat(fd, Self.whiteoutPrefix + name, &info, AT_SYMLINK_NOFOLLOW) == 0 { hides = true }
            guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return Probe(hidesLower: hides, info: nil) }
            if depth == path.count - 1 { return Probe(hidesLower: hides, info: info) }
            guard info.st_mode & S_IFMT == S_IFDIR else { return Probe(hidesLower: true, info: nil) }
            let next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard next >= 0 else { return Probe(hidesLower: hides, info: nil) }
            close(fd)
            fd = next
            if fstatat(fd, Self.opaqueMarker, &info, AT_SYMLINK_NOFOLLOW) == 0 { hides = true }
        }
        return Probe(hidesLower: hides, info: nil)
    }

    func status(_ path: [String]) throws(FSError) -> stat? {
        if path.isEmpty {
            var info = stat()
            return lstat(root, &info) == 0 ? info : nil
        }
        return try inParent(of: path) { fd, name throws(FSError) in
            var info = stat()
            return fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 ? info : nil
        } ?? nil
    }

    func isWhitedOut(_ path: [String]) throws(FSError) -> Bool {
        guard let name = path.last else { return false }
        return try status(path.dropLast() + [Self.whiteoutPrefix + name]) != nil
    }

    func isOpaque(_ directory: [String]) throws(FSError) -> Bool {
        try status(directory + [Self.opaqueMarker]) != nil
    }

    /// Whether the upper directory holds any entry (markers and whiteouts aside); false when it does not exist.
    func hasEntries(_ directory: [String]) throws(FSError) -> Bool {
        !(try list(directory).names.isEmpty)
    }

    /// Names in the upper directory, markers excluded; whiteouts listed separately.
    func list(_ directory: [String]) throws(FSError) -> (names: [String], whiteouts: Set<String>) {
        guard let fd = try openDirectory(directory) else { return ([], []) }
        guard let stream = fdopendir(fd) else {
            close(fd)
            return ([], [])
        }
        defer { closedir(stream) }
        var names: [String] = []
        var whiteouts = Set<String>()
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." || name == Self.opaqueMarker { continue }
            if directory.isEmpty && name == Self.workDirectory { continue }
            if name.hasPrefix(Self.whiteoutPrefix) {
                whiteouts.insert(String(name.dropFirst(Self.whiteoutPrefix.count)))
            } else {
                names.append(name)
            }
        }
        return (names, whiteouts)
    }

    func readLink(_ path: [String]) throws(FSError) -> String? {
        try inParent(of: path) { fd, name throws(FSError) in
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlinkat(fd, name, &buffer, buffer.count - 1)
            return n < 0 ? nil : String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        } ?? nil
    }

    /// Opens an existing upper file without following a final symlink.
    func openFile(_ path: [String], flags: Int32) throws(FSError) -> Int32 {
        let fd = try inParent(of: path) { dir, name throws(FSError) in
            openat(dir, name, (flags & ~(O_CREAT | O_EXCL)) | O_NOFOLLOW | O_CLOEXEC)
        }
        guard let fd, fd >= 0 else { throw fd == nil ? .notFound : Self.error(errno) }
        return fd
    }

    // MARK: Changes

    func makeWhiteout(_ path: [String]) throws(FSError) {
        _ = try inParent(of: path, create: true) { fd, name throws(FSError) in
            let marker = openat(fd, Self.whiteoutPrefix + name, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard marker >= 0 else { throw Self.error(errno) }
            close(marker)
        }
    }

    func removeWhiteout(_ path: [String]) throws(FSError) {
        _ = try inParent(of: path) { fd, name throws(FSError) in unlinkat(fd, Self.whiteoutPrefix + name, 0) }
    }

    func makeOpaque(_ directory: [String]) throws(FSError) {
        try makeWhiteout(directory + [String(Self.opaqueMarker.dropFirst(Self.whiteoutPrefix.count))])
    }

    /// Removes an upper directory together with the markers it holds (it must hold nothing else).
    func removeDirectory(_ path: [String]) throws(FSError) {
        let (names, whiteouts) = try list(path)
        guard names.isEmpty else { throw .notEmpty }
        if let fd = try openDirectory(path) {
            for name in whiteouts { unlinkat(fd, Self.whiteoutPrefix + name, 0) }
            unlinkat(fd, Self.opaqueMarker, 0)
            close(fd)
        }
        _ = try inParent(of: path) { fd, name throws(FSError) in
            if unlinkat(fd, name, AT_REMOVEDIR) != 0 { throw Self.error(errno) }
        }
    }

    /// A new, empty file in the work directory, with the mode and owner the published file will have (the owner
    /// first: `fchown` clears set-id bits).
    func makeWorkFile(permissions: UInt32, owner: (uid: UInt32, gid: UInt32)) throws(FSError) -> (
        fd: Int32, name: String
    ) {
        let name = UUID().uuidString
        let fd = open(root + "/" + Self.workDirectory + "/" + name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .unavailable(reason: "create work file: \(Self.lastError())") }
        fchown(fd, owner.uid, owner.gid)
        fchmod(fd, permissions & 0o7777)
        return (fd, name)
    }

    /// Atomically moves a work file to `path`, replacing what is there.
    func publish(workFile name: String, to path: [String]) throws(FSError) {
        let work = try openDirectory([Self.workDirectory])!
        defer { close(work) }
        let done: Void? = try inParent(of: path, create: true) { fd, target throws(FSError) in
            if renameat(work, name, fd, target) != 0 { throw Self.error(errno) }
        }
        if done == nil { throw .notFound }
    }

    func discard(workFile name: String) {
        unlink(root + "/" + Self.workDirectory + "/" + name)
    }

    static func error(_ code: Int32) -> FSError {
        switch code {
        case ENOENT: return .notFound
        case EEXIST: return .exists
        case ENOTEMPTY: return .notEmpty
        case ENOTDIR: return .notDirectory
        case EISDIR: return .isDirectory
        case EACCES, EPERM: return .permissionDenied
        case EINVAL: return .invalidArgument
        default: return .unavailable(reason: String(cString: strerror(code)))
        }
    }
}
