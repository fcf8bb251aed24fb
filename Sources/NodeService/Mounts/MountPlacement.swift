import FUSEMount
import Foundation
import Glibc

/// Where a new mount goes, given what the mountpoint holds already, so that a restarted or upgraded daemon never
/// leaves consumers facing the empty directory underneath:
///
/// - nothing: the mount goes on the directory;
/// - the stale mount of a dead mcvfs daemon (ENOTCONN): the new mount goes beneath it and the stale one is then
///   detached, so lookups go from failing straight to the new mount (Linux 6.5's `MOVE_MOUNT_BENEATH`; older
///   kernels detach first and mount after);
/// - a live mcvfs mount, with `--replace`: beneath it; once this daemon can serve, it detaches the old mount (its
///   daemon finishes what is in flight on it) and stops that daemon when it is in this PID namespace (a
///   `systemctl reload`); in a rolling update of a DaemonSet the old pod is stopped by Kubernetes instead;
/// - anything else: refused.
public struct MountPlacement: Sendable {
    public enum Existing: Equatable, Sendable {
        case none
        case stale(mountID: UInt64)
        case live(mountID: UInt64)
    }

    /// Why a mount cannot go at a mountpoint (named in each case).
    public enum Problem: Error, Equatable, CustomStringConvertible {
        /// The mountpoint cannot be looked at (`stat` or `statvfs` failed).
        case unreachable(String, errno: Int32)
        /// A dead FUSE daemon's mount that is not mcvfs's, which mcvfs never takes over.
        case foreignStaleMount(String)
        case notADirectory(String)
        /// A mount of another filesystem, never mounted over.
        case otherMount(String, fsType: String)
        /// A live mcvfs mount, without `--replace`.
        case liveMount(String)
        /// `--replace` where this process may not use the kernel's mount API (not root).
        case replaceNeedsRoot(String)

        public var description: String {
            switch self {
            case .unreachable(let mountpoint, let code):
                return "mountpoint \(mountpoint): \(String(cString: strerror(code)))"
            case .foreignStaleMount(let mountpoint):
                return "\(mountpoint) holds a stale FUSE mount that is not mcvfs's; unmount it"
            case .notADirectory(let mountpoint): return "mountpoint \(mountpoint) is not a directory"
            case .otherMount(let mountpoint, let fsType):
                return "\(mountpoint) is already a mount point (\(fsType)); unmount it first"
            case .liveMount(let mountpoint):
                return "\(mountpoint) is already an mcvfs mount; run `mcvfs unmount \(mountpoint)` first, or pass "
                    + "--replace to take it over without a gap"
            case .replaceNeedsRoot(let mountpoint):
                return "--replace needs root (the kernel's mount API); unmount \(mountpoint) first"
            }
        }
    }

    public let mountpoint: String
    let log: NodeLog
    public let existing: Existing

    public var replacesLiveMount: Bool {
        if case .live = existing { return true }
        return false
    }

    /// Looks at what `mountpoint` holds.
    /// - Throws: `Problem` for a missing or non-directory mountpoint, a mount that is not mcvfs's, or a live mcvfs
    ///   mount without `replace`.
    public static func inspect(_ mountpoint: String, replace: Bool, log: NodeLog = .silent) throws -> MountPlacement {
        var info = stat()
        // A missing mountpoint is made (in an existing directory): a pod's volume holds the mountpoint, and
        // nothing else creates it there.
        if stat(mountpoint, &info) != 0 && errno == ENOENT && mkdir(mountpoint, 0o755) == 0 {
            log.info("created the mountpoint \(mountpoint)")
        }
        // `statvfs` always reaches the daemon; `stat` may be answered from attributes the kernel cached.
        var filesystem = statvfs()
        if statvfs(mountpoint, &filesystem) != 0 && errno == ENOTCONN || stat(mountpoint, &info) != 0 {
            guard errno == ENOTCONN else {
                throw Problem.unreachable(mountpoint, errno: errno)
            }
            guard let top = topEntry(at: mountpoint), top.entry.fsType == MountTable.mcvfsType else {
                throw Problem.foreignStaleMount(mountpoint)
            }
            return MountPlacement(mountpoint: mountpoint, log: log, existing: .stale(mountID: top.id))
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw Problem.notADirectory(mountpoint) }
        guard let top = topEntry(at: mountpoint) else {
            if let entries = try? FileManager.default.contentsOfDirectory(atPath: mountpoint), !entries.isEmpty {
                log.warning(
                    "\(mountpoint) is not empty: the mount hides its \(entries.count) entr"
                        + "\(entries.count == 1 ? "y" : "ies") until it is unmounted")
            }
            return MountPlacement(mountpoint: mountpoint, log: log, existing: .none)
        }
        guard top.entry.fsType == MountTable.mcvfsType else {
            throw Problem.otherMount(mountpoint, fsType: top.entry.fsType)
        }
        guard replace else { throw Problem.liveMount(mountpoint) }
        return MountPlacement(mountpoint: mountpoint, log: log, existing: .live(mountID: top.id))
    }

    /// The mount on top of `path` when `path` is a mountpoint (its mountinfo entry names `path`).
    static func topEntry(at path: String) -> (id: UInt64, entry: MountTable.Entry)? {
        guard let id = FUSEMount.topMountID(at: path),
            let entry = MountTable.current().entries.first(where: { UInt64($0.id) == id && $0.mountpoint == path })
        else { return nil }
        return (id, entry)
    }

    /// Attaches a FUSE connection where this placement says; nil when this process may not use the kernel's mount
    /// API (`fsopen` needs CAP_SYS_ADMIN: a non-root user), so libfuse mounts on top through the setuid
    /// `fusermount3` as it always did; such a mount cannot go beneath another.
    public func attach(_ options: FUSEMount.Options) throws -> FUSEMount? {
        do { return try attachWithMountAPI(options) } catch {
            guard case .configure(_, EPERM) = error else { throw error }
            switch existing {
            case .none:
                return nil
            case .stale:
                log.warning("clearing the stale mount at \(mountpoint) first: only root can mount beneath it")
                try Mountpoint.unmount(mountpoint, lazy: true)
                return nil
            case .live:
                throw Problem.replaceNeedsRoot(mountpoint)
            }
        }
    }

    private func attachWithMountAPI(_ options: FUSEMount.Options) throws(FUSEMount.MountError) -> FUSEMount {
        switch existing {
        case .none:
            return try FUSEMount.attach(at: mountpoint, options: options, placement: .top)
        case .live:
            return try FUSEMount.attach(at: mountpoint, options: options, placement: .beneath)
        case .stale(let id):
            do {
                return try FUSEMount.attach(at: mountpoint, options: options, placement: .beneath)
            } catch .attach(_, .beneath, let code) where code == EINVAL {
                log.warning("cannot mount beneath the stale mount (kernel before 6.5?): clearing it first")
                FUSEMount.detach(at: mountpoint, ifTopIs: id)
                return try FUSEMount.attach(at: mountpoint, options: options, placement: .top)
            }
        }
    }

    /// Called once the new mount's session exists (its requests wait in the kernel until the loop runs): takes
    /// the mountpoint over from the mount on top, which consumers then stop reaching.
    public func takeOver() {
        switch existing {
        case .none: return
        case .stale(let id):
            if FUSEMount.detach(at: mountpoint, ifTopIs: id) {
                log.warning("replaced the stale mount of a dead mcvfs daemon at \(mountpoint)")
            }
        case .live(let id):
            let previous = Self.daemonPID(serving: mountpoint)
            guard FUSEMount.detach(at: mountpoint, ifTopIs: id) else {
                log.warning("the mount this one replaces at \(mountpoint) was gone already")
                return
            }
            log.info("took over \(mountpoint) from mount \(id)\(previous.map { " (daemon \($0))" } ?? "")")
            if let previous, Self.isMountDaemon(pid: previous, mountpoint: mountpoint) {
                kill(previous, SIGTERM)
            }
        }
    }

    /// Whether a newer mcvfs mount serves the mountpoint, or waits beneath this one to: this one is being
    /// replaced, and must not tell systemd the service stops (its successor is the service now).
    public static func isReplaced(_ mount: FUSEMount?) -> Bool {
        guard let mount else { return false }  // libfuse's own mount: never replaced
        let table = MountTable.current()
        guard table.entries.contains(where: { UInt64($0.id) == mount.mountID }) else {
            // Detached: replaced if another mcvfs mount is at the path now.
            guard let top = topEntry(at: mount.path) else { return false }
            return top.entry.fsType == MountTable.mcvfsType && top.id != mount.mountID
        }
        return table.hasReplacementBeneath(mount: Int(mount.mountID))
    }

    /// The daemon pid a live mount reports in its status document (in the daemon's own PID namespace).
    static func daemonPID(serving mountpoint: String) -> pid_t? {
        let path = mountpoint + "/.mcvfs/status.json"
        guard let data = FileManager.default.contents(atPath: path),
            let document = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let pid = document["pid"] as? Int
        else { return nil }
        return pid_t(pid)
    }

    /// Whether `pid`, as this process sees it, is another `mcvfs mount` of `mountpoint`: a status document's pid
    /// means that process only in the same PID namespace (a pod's daemon reports pid 1). Compares text only:
    /// nothing here may look at the mountpoint, whose new mount does not answer before its loop runs.
    static func isMountDaemon(pid: pid_t, mountpoint: String) -> Bool {
        guard pid > 1, pid != getpid(),
            let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
        else { return false }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        let target = mountpoint.hasSuffix("/") ? String(mountpoint.dropLast()) : mountpoint
        return arguments.contains("mount")
            && arguments.contains { $0 == target || $0 == target + "/" || ($0 as NSString).standardizingPath == target }
    }

    /// Whether this daemon must wait to be stopped once replaced: as a container's init (pid 1), exiting would
    /// make the container runtime restart it, and the restarted daemon would take the mount back. Elsewhere
    /// (systemd) the replacement is the service's main process by then, and this one just exits.
    public static var waitsWhenReplaced: Bool { getpid() == 1 }

    /// Blocks until SIGTERM, SIGINT or SIGHUP.
    public static func waitForStop() {
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        var received: Int32 = 0
        sigwait(&signals, &received)
    }
}
