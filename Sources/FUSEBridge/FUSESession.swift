import CFuse
import Glibc
import ImageFS

/// A libfuse low-level session serving one `FileSystem` at a mountpoint.
///
/// The session owns the C handle; callbacks find the filesystem through the session's userdata pointer, so the
/// session must outlive `run()` (it does: `run` is a method of it).
public final class FUSESession {
    public struct Options: Sendable {
        public var mountpoint: String
        /// Shown as the source in `/proc/mounts` (`mcvfs#<repository>`).
        public var fsName: String
        public var allowOther: Bool
        public var maxThreads: UInt32
        /// How long the kernel may cache attributes and names of stable inodes.
        public var cacheTimeout: Double
        /// Log every failed operation, not only failures to get content.
        public var traceErrors: Bool
        /// Each request runs under a `Deadline` this far away: everything it makes the registry do ends by it.
        public var operationBudget: Duration?

        public init(
            mountpoint: String, fsName: String, allowOther: Bool, maxThreads: UInt32 = 16, cacheTimeout: Double = 60,
            traceErrors: Bool = false, operationBudget: Duration? = nil
        ) {
            self.mountpoint = mountpoint
            self.fsName = fsName
            self.allowOther = allowOther
            self.maxThreads = maxThreads
            self.cacheTimeout = cacheTimeout
            self.traceErrors = traceErrors
            self.operationBudget = operationBudget
        }

        /// The command line libfuse parses: its mount options after `-o`. The kernel checks permissions itself
        /// (`default_permissions`) against the modes mcvfs reports. libfuse splits options at commas and takes a
        /// backslash as an escape, so the source name has both escaped.
        var arguments: [String] {
            var source = ""
            for character in fsName {
                if character == "\\" || character == "," { source.append("\\") }
                source.append(character)
            }
            var mountOptions = ["fsname=" + source, "subtype=mcvfs", "default_permissions"]
            if allowOther { mountOptions.append("allow_other") }
            return ["mcvfs", "-o", mountOptions.joined(separator: ",")]
        }
    }

    public enum SessionError: Error, Equatable, CustomStringConvertible {
        case create
        case mount(String)
        case loop(Int32)

        public var description: String {
            switch self {
            case .create: return "cannot create a FUSE session (is /dev/fuse available?)"
            case .mount(let point): return "cannot mount at \(point) (see the log; is it an existing empty directory?)"
            case .loop(let rc): return "FUSE session ended with error \(rc)"
            }
        }
    }

    let context: OperationContext
    private var session: OpaquePointer?
    private var notifier: KernelNotifier?
    private var mounted = false
    private let options: Options

    /// - Parameters:
    ///   - onError: told of each error reply (operation, errno), for metrics; it must not block.
    ///   - onConnected: called once the kernel's INIT is answered, before the first request after it is served.
    public init(
        fileSystem: any FileSystem, options: Options, log: @escaping @Sendable (String) -> Void,
        onError: (@Sendable (String, Int32) -> Void)? = nil, onConnected: (@Sendable () -> Void)? = nil
    ) {
        self.options = options
        self.context = OperationContext(
            fileSystem: fileSystem, cacheTimeout: options.cacheTimeout, traceErrors: options.traceErrors,
            operationBudget: options.operationBudget, log: log, onError: onError, onConnected: onConnected)
    }

    deinit {
        notifier?.stop()
        if let session {
            if mounted { fuse_session_unmount(session) }
            fuse_session_destroy(session)
        }
    }

    /// Creates the session and mounts it; the mount answers requests once `run()` is called.
    public func mount() throws {
        var cStrings = options.arguments.map { strdup($0) }
        defer {
            for string in cStrings { free(string) }
        }
        var operations = OperationContext.operations
        let userdata = Unmanaged.passUnretained(context).toOpaque()
        session = cStrings.withUnsafeMutableBufferPointer { argv in
            var args = fuse_args(argc: Int32(argv.count), argv: argv.baseAddress, allocated: 0)
            return fuse_session_new(&args, &operations, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
        }
        guard let session else { throw SessionError.create }
        guard fuse_session_mount(session, options.mountpoint) == 0 else {
            throw SessionError.mount(options.mountpoint)
        }
        mounted = true
        let notifier = KernelNotifier(session: session)
        self.notifier = notifier
        context.fileSystem.connect(kernel: notifier)
        // From here on SIGINT/SIGTERM/SIGHUP must end in an unmount, even before `run()` starts the loop (a
        // service manager may stop us right after we report ready): the handler only marks the session as
        // exited, and a loop started on an exited session returns at once, then `run()` unmounts.
        fuse_set_signal_handlers(session)
    }

    /// Serves requests until the filesystem is unmounted or SIGINT/SIGTERM/SIGHUP arrives, then unmounts.
    /// - Parameter stopping: called once the loop has ended, before unmounting (to tell systemd `STOPPING=1`).
    /// - Returns: the signal that ended the loop, or 0 when the filesystem went away (unmounted).
    @discardableResult
    public func run(stopping: () -> Void = {}) throws -> Int32 {
        guard let session else { throw SessionError.create }
        let rc = mcvfs_session_loop_mt(session, options.maxThreads)
        notifier?.stop()
        fuse_remove_signal_handlers(session)
        stopping()
        fuse_session_unmount(session)
        mounted = false
        // The loop returns the signal number when a signal stopped it: that is a clean stop.
        if rc < 0 { throw SessionError.loop(rc) }
        return rc
    }
}
