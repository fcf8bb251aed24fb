import Foundation
import Glibc

/// One writer's upper directory on local disk: the only place an overlay writes.
///
/// The upper belongs to its writer, who may change anything in it directly on disk at any moment, so the daemon
/// (root) reaches it only through `DirectoryDescriptor`s: the upper opened once and checked (a directory owned by
/// its writer), each path walked one component at a time without following links, every final operation `*at`
/// on the parent's descriptor. Scratch files live outside it, in a work directory only the daemon can reach
/// (`<upper root>/.mcvfs-work/<name>/`, 0700), so no user can make the daemon create, rename or delete a file
/// anywhere else. Deletions of lower entries are recorded as OCI-style whiteout files (`.wh.<name>`,
/// `.wh..wh..opq`), names the overlay refuses to let users create.
final class UpperLayer: Sendable {
    static let whiteoutPrefix = ".wh."
    static let opaqueMarker = ".wh..wh..opq"
    /// In the upper root: the daemon's own directory of work directories, one per upper, for copy-up and shadow
    /// writes (on the same filesystem as the uppers, so `rename` publishes atomically). Inside an upper, the name
    /// of where older versions kept them: reserved, and removed (never followed) at start.
    static let workDirectory = ".mcvfs-work"

    let root: String
    let owner: (uid: UInt32, gid: UInt32)
    /// The upper itself, opened once: a user who renames or replaces its path changes nothing the daemon uses.
    private let top: DirectoryDescriptor
    /// This upper's work directory, owned by the daemon and closed to everyone else.
    private let work: DirectoryDescriptor

    /// Opens (creating when missing) upper `name` of the directory of uppers and its work directory, and clears
    /// what a crash left in the latter.
    /// - Parameters:
    ///   - uppers: the upper root, owned by the daemon.
    ///   - works: the daemon's work directories (`<upper root>/.mcvfs-work`).
    init(name: String, in uppers: DirectoryDescriptor, works: DirectoryDescriptor, owner: (uid: UInt32, gid: UInt32))
        throws(FSError)
    {
        root = uppers.path + "/" + name
        self.owner = owner
        guard let top = try uppers.directory(name, create: (0o700, Self.chownable(owner))) else {
            throw .unavailable(reason: "\(root) is not a directory: remove it")
        }
        // Its writer's, or the daemon's own (a daemon that is not root cannot give files away).
        let holder = try top.status().st_uid
        guard holder == owner.uid || holder == geteuid() else {
            throw .unavailable(reason: "\(root) belongs to uid \(holder), not \(owner.uid): remove or chown it")
        }
        self.top = top
        let daemon = (uid: geteuid(), gid: getegid())
        guard let work = try works.directory(name, create: (0o700, daemon)) else {
            throw .unavailable(reason: "\(works.path)/\(name) is not a directory: remove it")
        }
        try Self.restrict(work, to: daemon.uid)
        self.work = work
        Self.clear(work)
        try Self.removeLegacyWork(in: top)
    }

    /// Checks that the daemon owns `directory` and closes it to everyone else (older versions made some 0755).
    static func restrict(_ directory: DirectoryDescriptor, to uid: UInt32) throws(FSError) {
        try directory.check(owner: uid)
        if try directory.status().st_mode & 0o077 != 0, fchmod(directory.fd, 0o700) != 0 {
            throw .unavailable(reason: "chmod 0700 \(directory.path): \(lastError())")
        }
    }

    /// Temp files of writes a crash interrupted were never published: they are garbage. `unlinkat` on the
    /// directory's own descriptor: nothing is deleted through a link.
    private static func clear(_ work: DirectoryDescriptor) {
        for name in (try? work.entries()) ?? [] { _ = work.remove(name) }
    }

    /// Older versions kept the work directory inside the upper, where its writer could swap it for a link.
    /// What is there now is removed as it is: a link itself, or a directory's plain entries.
    private static func removeLegacyWork(in top: DirectoryDescriptor) throws(FSError) {
        guard let info = top.status(workDirectory) else { return }
        if let legacy = try top.directory(workDirectory) { clear(legacy) }
        _ = top.remove(workDirectory, directory: info.st_mode & S_IFMT == S_IFDIR)
    }

    /// `owner`, or the daemon itself when it cannot give files away.
    static func chownable(_ owner: (uid: UInt32, gid: UInt32)) -> (uid: UInt32, gid: UInt32) {
        geteuid() == 0 ? owner : (geteuid(), getegid())
    }

    static func lastError() -> String { String(cString: strerror(errno)) }

    static func isReserved(_ name: String) -> Bool {
        name.hasPrefix(whiteoutPrefix) || name == workDirectory
    }

    // MARK: Walking

    /// Opens directory `components` below the upper, optionally creating missing ones (owned by the writer);
    /// nil when it does not exist (or is not a directory, or a link).
    func openDirectory(_ components: [String], create: Bool = false, mode: (Int) -> UInt32 = { _ in 0o755 })
        throws(FSError) -> DirectoryDescriptor?
    {
        var current = top
        for (depth, name) in components.enumerated() {
            guard let next = try current.directory(name, create: create ? (mode(depth), Self.chownable(owner)) : nil)
            else { return nil }
            current = next
        }
        return current
    }

    /// Runs `body` with the descriptor of `path`'s parent and its last name.
    func inParent<R>(
        of path: [String], create: Bool = false, _ body: (DirectoryDescriptor, String) throws(FSError) -> R
    ) throws(FSError) -> R? {
        guard let name = path.last, let directory = try openDirectory(Array(path.dropLast()), create: create) else {
            return nil
        }
        return try body(directory, name)
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
        if path.isEmpty { return Probe(hidesLower: false, info: try top.status()) }
        var current = top
        var hides = false
        for (depth, name) in path.enumerated() {
            if current.status(Self.whiteoutPrefix + name) != nil { hides = true }
            guard let info = current.status(name) else { return Probe(hidesLower: hides, info: nil) }
            if depth == path.count - 1 { return Probe(hidesLower: hides, info: info) }
            guard info.st_mode & S_IFMT == S_IFDIR else { return Probe(hidesLower: true, info: nil) }
            guard let next = try current.directory(name) else { return Probe(hidesLower: hides, info: nil) }
            current = next
            if current.status(Self.opaqueMarker) != nil { hides = true }
        }
        return Probe(hidesLower: hides, info: nil)
    }

    func status(_ path: [String]) throws(FSError) -> stat? {
        if path.isEmpty { return try top.status() }
        return try inParent(of: path) { directory, name in directory.status(name) } ?? nil
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
        guard let descriptor = try openDirectory(directory) else { return ([], []) }
        var names: [String] = []
        var whiteouts = Set<String>()
        for name in try descriptor.entries() {
            if name == Self.opaqueMarker { continue }
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
        try inParent(of: path) { directory, name in directory.readLink(name) } ?? nil
    }

    /// Opens an existing regular upper file without following a final link (`invalidArgument` for a FIFO, a
    /// device or a socket a user planted).
    func openFile(_ path: [String], flags: Int32) throws(FSError) -> Int32 {
        let opened = try inParent(of: path) { directory, name in
            directory.openFile(name, flags: flags & ~(O_CREAT | O_EXCL))
        }
        switch opened {
        case nil: throw .notFound
        case .failure(let error)?: throw Self.error(error.code)
        case .success(let fd)?: return fd
        }
    }

    /// The content of upper file `path` when it holds at most `limit` bytes (see `DirectoryDescriptor.read`).
    func read(_ path: [String], limit: Int, skipping: (stat) -> Bool = { _ in false }) throws(FSError)
        -> DirectoryDescriptor.Bounded
    {
        guard
            let read = try inParent(
                of: path,
                { directory, name throws(FSError) in try directory.read(name, limit: limit, skipping: skipping) })
        else { throw .notFound }
        return read
    }

    // MARK: Changes

    func makeWhiteout(_ path: [String]) throws(FSError) {
        _ = try inParent(of: path, create: true) { directory, name throws(FSError) in
            switch directory.openFile(Self.whiteoutPrefix + name, flags: O_CREAT | O_WRONLY, mode: 0o600) {
            case .failure(let error): throw Self.error(error.code)
            case .success(let marker): close(marker)
            }
        }
    }

    func removeWhiteout(_ path: [String]) throws(FSError) {
        _ = try inParent(of: path) { directory, name in directory.remove(Self.whiteoutPrefix + name) }
    }

    func makeOpaque(_ directory: [String]) throws(FSError) {
        try makeWhiteout(directory + [String(Self.opaqueMarker.dropFirst(Self.whiteoutPrefix.count))])
    }

    /// Removes an upper directory together with the markers it holds (it must hold nothing else).
    func removeDirectory(_ path: [String]) throws(FSError) {
        let (names, whiteouts) = try list(path)
        guard names.isEmpty else { throw .notEmpty }
        if let descriptor = try openDirectory(path) {
            for name in whiteouts { _ = descriptor.remove(Self.whiteoutPrefix + name) }
            _ = descriptor.remove(Self.opaqueMarker)
        }
        _ = try inParent(of: path) { directory, name throws(FSError) in
            if let error = directory.remove(name, directory: true) { throw Self.error(error.code) }
        }
    }

    /// A new, empty file in the work directory, with the mode and owner the published file will have (the owner
    /// first: `fchown` clears set-id bits, which a kernel cache never needs and the overlay never sets).
    func makeWorkFile(permissions: UInt32, owner: (uid: UInt32, gid: UInt32)) throws(FSError) -> (
        fd: Int32, name: String
    ) {
        let name = UUID().uuidString
        guard case .success(let fd) = work.openFile(name, flags: O_CREAT | O_EXCL | O_RDWR, mode: 0o600) else {
            throw .unavailable(reason: "create work file in \(work.path): \(Self.lastError())")
        }
        do throws(FSError) {
            try Self.giveAway(fd, to: owner, permissions: permissions)
        } catch {
            close(fd)
            _ = work.remove(name)
            throw error
        }
        return (fd, name)
    }

    /// Gives a file the daemon just created to its writer (who may then `touch` and `chmod` it), with `permissions`
    /// less set-id bits. Only root can; a daemon that is not root keeps it.
    static func giveAway(_ fd: Int32, to writer: (uid: UInt32, gid: UInt32), permissions: UInt32) throws(FSError) {
        let owner = chownable(writer)
        guard fchown(fd, owner.uid, owner.gid) == 0, fchmod(fd, permissions & 0o1777) == 0 else {
            throw .unavailable(reason: "chown/chmod of a new upper file: \(lastError())" + capabilityHint)
        }
    }

    /// `giveAway` for entry `name` of `directory` (a new directory or link: never followed).
    static func giveAway(_ name: String, in directory: DirectoryDescriptor, to writer: (uid: UInt32, gid: UInt32))
        throws(FSError)
    {
        if let error = directory.changeOwner(name, to: chownable(writer)) {
            throw .unavailable(reason: "chown of \(name): \(String(cString: strerror(error.code)))" + capabilityHint)
        }
    }

    /// What a failed `chown` as root most likely means.
    static let capabilityHint =
        " (a daemon running as root needs CAP_CHOWN and CAP_FOWNER to give users their files: see systemd/mcvfs@.service)"

    /// Atomically moves a work file to `path`, replacing what is there.
    func publish(workFile name: String, to path: [String]) throws(FSError) {
        let done: Void? = try inParent(of: path, create: true) { directory, target throws(FSError) in
            if let error = work.rename(name, to: directory, target) { throw Self.error(error.code) }
        }
        if done == nil { throw .notFound }
    }

    func discard(workFile name: String) {
        _ = work.remove(name)
    }

    static func error(_ code: Int32) -> FSError { DirectoryDescriptor.error(code, "upper", "file") }
}
