import CMount
import Glibc

/// A FUSE connection that mcvfs attaches to the mount tree itself, with Linux's mount API, instead of letting
/// libfuse mount it: the one way to put a new mount *beneath* the mount already at a mountpoint
/// (`MOVE_MOUNT_BENEATH`, Linux 6.5), and to take down exactly this mount later rather than whatever is on top
/// of the path then.
///
/// Replacing a mount without a gap is then: attach beneath, serve, and unmount the old top, which reveals the new
/// mount in every namespace the mountpoint propagates to (the kernel tucks propagated copies beneath the old
/// copies too). Consumers never see the empty directory underneath, nor a moment without a mount.
///
/// libfuse serves the connection through its `/dev/fd/N` mountpoint form (`libfuseMountpoint`), in which it
/// neither mounts nor unmounts; it closes the device when its session is destroyed.
public final class FUSEMount: Sendable {
    public struct Options: Sendable {
        /// Shown as the mount's source in `/proc/mounts` (`mcvfs#<reference>`).
        public var fsName: String
        /// The mount's type is `fuse.<subtype>`.
        public var subtype: String
        public var allowOther: Bool
        /// Let the kernel check permissions from the modes the filesystem reports.
        public var defaultPermissions: Bool
        /// Who mounted it: the kernel lets only this user (and root) in unless `allowOther`.
        public var uid: uid_t
        public var gid: gid_t

        public init(
            fsName: String, subtype: String = "mcvfs", allowOther: Bool, defaultPermissions: Bool = true,
            uid: uid_t = getuid(), gid: gid_t = getgid()
        ) {
            self.fsName = fsName
            self.subtype = subtype
            self.allowOther = allowOther
            self.defaultPermissions = defaultPermissions
            self.uid = uid
            self.gid = gid
        }
    }

    public enum Placement: String, Sendable {
        /// On the mountpoint directory itself (nothing is mounted there).
        case top
        /// Beneath the mount on top of the mountpoint, to be revealed when that one is unmounted.
        case beneath
    }

    public enum MountError: Error, Equatable, CustomStringConvertible {
        case device(errno: Int32)
        case configure(step: String, errno: Int32)
        case attach(path: String, placement: Placement, errno: Int32)

        public var description: String {
            switch self {
            case .device(let code): return FUSEMount.deviceProblem(code)
            case .configure(let step, let code):
                return "cannot create the FUSE mount (\(step)): \(String(cString: strerror(code)))"
            case .attach(let path, .beneath, let code) where code == EINVAL:
                return
                    "cannot mount beneath the mount at \(path) (EINVAL: needs Linux 6.5 or later, and a mount on top)"
            case .attach(let path, let placement, let code):
                return "cannot attach the FUSE mount \(placement == .beneath ? "beneath the mount at" : "at") \(path): "
                    + String(cString: strerror(code))
            }
        }
    }

    public let path: String
    public let placement: Placement
    /// This mount's ID, as the first field of `/proc/self/mountinfo` names it.
    public let mountID: UInt64
    /// The `/dev/fuse` descriptor of the connection; libfuse takes it over through `libfuseMountpoint`.
    public let device: Int32

    private init(path: String, placement: Placement, mountID: UInt64, device: Int32) {
        self.path = path
        self.placement = placement
        self.mountID = mountID
        self.device = device
    }

    /// Why this process cannot use `/dev/fuse`, and what to do about it.
    static func deviceProblem(_ code: Int32, device: String = "/dev/fuse") -> String {
        let reason = String(cString: strerror(code))
        switch code {
        case ENOENT, ENODEV, ENXIO:
            return "cannot open \(device): \(reason): load the fuse module (modprobe fuse); in a container, pass the "
                + "device (--device /dev/fuse, or a privileged pod)"
        case EACCES:
            var info = stat()
            let mode = stat(device, &info) == 0 ? String(info.st_mode & 0o7777, radix: 8) : "?"
            return "cannot open \(device): \(reason) for uid \(getuid()) (mode 0\(mode), owner \(info.st_uid):"
                + "\(info.st_gid)): non-root mounts need it readable and writable by everyone (chmod 0666 \(device), as "
                + "the fuse3 package sets it up); or mount as root"
        case EPERM:
            return "cannot open \(device): \(reason): a device policy denies it (in a container, pass --device "
                + "/dev/fuse, or run the pod privileged)"
        default:
            return "cannot open \(device): \(reason)"
        }
    }

    /// What to pass libfuse as the mountpoint: the connection is mounted already, libfuse only serves it.
    public var libfuseMountpoint: String { "/dev/fd/\(device)" }

    /// Opens a FUSE connection, creates its superblock and attaches it at `path`.
    /// - Throws: `MountError`; nothing stays mounted or open after a failure.
    public static func attach(at path: String, options: Options, placement: Placement) throws(MountError) -> FUSEMount {
        let device = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard device >= 0 else { throw .device(errno: errno) }
        var keepDevice = false
        defer { if !keepDevice { close(device) } }

        let context = mcvfs_fsopen("fuse")
        guard context >= 0 else { throw .configure(step: "fsopen fuse", errno: errno) }
        defer { close(context) }
        // The options libfuse's own mount passes (lib/mount.c), as fsconfig parameters (fs/fuse/inode.c).
        var strings: [(String, String)] = [
            ("source", options.fsName), ("subtype", options.subtype), ("fd", String(device)),
            ("rootmode", String(S_IFDIR, radix: 8)), ("user_id", String(options.uid)),
            ("group_id", String(options.gid)),
        ]
        if options.subtype.isEmpty { strings.removeAll { $0.0 == "subtype" } }
        for (key, value) in strings where mcvfs_fsconfig_string(context, key, value) != 0 {
            throw .configure(step: "\(key)=\(value)", errno: errno)
        }
        var flags: [String] = []
        if options.allowOther { flags.append("allow_other") }
        if options.defaultPermissions { flags.append("default_permissions") }
        for flag in flags where mcvfs_fsconfig_flag(context, flag) != 0 {
            throw .configure(step: flag, errno: errno)
        }
        // Creating the superblock queues the kernel's FUSE_INIT on the device; it waits there until served.
        guard mcvfs_fsconfig_create(context) == 0 else { throw .configure(step: "create", errno: errno) }
        let mountFD = mcvfs_fsmount(context)
        guard mountFD >= 0 else { throw .configure(step: "fsmount", errno: errno) }
        guard mcvfs_move_mount(mountFD, path, placement == .beneath ? 1 : 0) == 0 else {
            let code = errno
            close(mountFD)
            throw .attach(path: path, placement: placement, errno: code)
        }
        // The mount is known by its ID from here on: an open descriptor of it would make `umount` answer EBUSY.
        var id: UInt64 = 0
        let identified = mcvfs_mount_id(mountFD, &id) == 0
        let code = errno
        close(mountFD)
        guard identified else {
            _ = mcvfs_detach(path)
            throw .configure(step: "statx mount id", errno: code)
        }
        keepDevice = true
        return FUSEMount(path: path, placement: placement, mountID: id, device: device)
    }

    /// Whether this mount is the one on top of `path`, the one lookups through the path reach.
    public var isTop: Bool { Self.topMountID(at: path) == mountID }

    /// Detaches this mount when it is on top of its path (lazily: files open on it keep working until closed);
    /// leaves it alone when another mount has taken the path over, so stopping never takes down a replacement.
    /// - Returns: whether it detached.
    @discardableResult
    public func detachIfTop() -> Bool { Self.detach(at: path, ifTopIs: mountID) }

    /// Undoes `attach` when libfuse could not take the connection over (it cannot allocate a session): closes the
    /// device, which aborts the connection, and detaches the mount when it is on top. One put beneath another
    /// mount cannot be named by path; it stays under it, dead and never reached, until that stack is unmounted.
    public func abandon() {
        detachIfTop()
        close(device)
    }

    /// The ID of the mount the path `path` resolves to (its top mount when `path` is a mountpoint), from cached
    /// attributes: it works on the stale mount of a dead FUSE daemon. Nil when the path cannot be opened.
    public static func topMountID(at path: String) -> UInt64? {
        var id: UInt64 = 0
        return mcvfs_mount_id_at(path, &id) == 0 ? id : nil
    }

    /// Lazily detaches the top mount at `path` if it is mount `id`.
    /// - Returns: whether it did. A mount put on top between the check and the detach is a race this accepts:
    ///   only mcvfs replacements stack here, and they go beneath, never on top.
    @discardableResult
    public static func detach(at path: String, ifTopIs id: UInt64) -> Bool {
        guard topMountID(at: path) == id else { return false }
        return mcvfs_detach(path) == 0
    }
}
