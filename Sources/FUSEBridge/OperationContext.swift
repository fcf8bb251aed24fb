import CFuse
import Glibc
import ImageFS
import Synchronization
import TimeBudget

/// What every callback needs: the filesystem, open directory listings, and the one place that turns errors
/// into replies. Callbacks work inline on libfuse's worker threads, then reply.
final class OperationContext: Sendable {
    let fileSystem: any FileSystem
    let cacheTimeout: Double
    let log: @Sendable (String) -> Void
    /// Log every failed operation, routine ones (a lookup of a missing name) included.
    let traceErrors: Bool
    /// The deadline each request runs under, from its start (nil: none).
    let operationBudget: Duration?
    /// Told of every error reply (operation name, errno), for metrics; nil when nobody counts.
    let onError: (@Sendable (String, Int32) -> Void)?
    /// Called once, with the first request after the kernel's INIT was answered (mount options that the INIT
    /// reply resets, such as the read-ahead window, can be set from then on).
    let onConnected: (@Sendable () -> Void)?
    let connectedPending = Atomic(false)
    /// Listings snapshotted at `opendir`, so `readdir` offsets stay valid across calls.
    private let listings = Mutex<(next: UInt64, open: [UInt64: [DirectoryEntry]])>((1, [:]))

    init(
        fileSystem: any FileSystem, cacheTimeout: Double, traceErrors: Bool, operationBudget: Duration? = nil,
        log: @escaping @Sendable (String) -> Void, onError: (@Sendable (String, Int32) -> Void)? = nil,
        onConnected: (@Sendable () -> Void)? = nil
    ) {
        self.onConnected = onConnected
        self.fileSystem = fileSystem
        self.cacheTimeout = cacheTimeout
        self.traceErrors = traceErrors
        self.operationBudget = operationBudget
        self.log = log
        self.onError = onError
    }

    static func from(_ req: fuse_req_t?) -> OperationContext {
        Unmanaged<OperationContext>.fromOpaque(fuse_req_userdata(req)).takeUnretainedValue()
    }

    static func caller(_ req: fuse_req_t?) -> Caller {
        let ctx = fuse_req_ctx(req)!.pointee
        return Caller(uid: ctx.uid, gid: ctx.gid, pid: ctx.pid)
    }

    func timeout(for attributes: Attributes) -> Double { attributes.isVolatile ? 0 : cacheTimeout }

    func nameTimeout(for attributes: Attributes) -> Double {
        attributes.isVolatile || attributes.nameIsVolatile ? 0 : cacheTimeout
    }

    /// Runs `body` under the request's deadline; a thrown `FSError` becomes its errno reply, logged once when it
    /// is not routine.
    func serve(_ req: fuse_req_t?, _ operation: StaticString, _ body: () throws(FSError) -> Void) {
        if connectedPending.load(ordering: .relaxed) { announceConnection() }
        do {
            try Deadline.bind(operationBudget.map(Deadline.after), body)
        } catch {
            if error.isNoteworthy || traceErrors { log("\(operation): \(error)") }
            onError?("\(operation)", error.errno)
            fuse_reply_err(req, error.errno)
        }
    }

    private func announceConnection() {
        if connectedPending.exchange(false, ordering: .acquiringAndReleasing) { onConnected?() }
    }

    func entry(_ attributes: Attributes) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = attributes.ino
        entry.generation = 1
        entry.attr = stat(attributes)
        entry.attr_timeout = timeout(for: attributes)
        entry.entry_timeout = nameTimeout(for: attributes)
        return entry
    }

    /// Hands the kernel an inode, which counts as one lookup on it. A reply the kernel no longer waits for (the
    /// caller was interrupted) fails with ENOENT, and that lookup is given back, as libfuse's high-level layer does.
    func replyEntry(_ req: fuse_req_t?, _ attributes: Attributes) {
        var entry = entry(attributes)
        if fuse_reply_entry(req, &entry) != 0 { fileSystem.forget(ino: attributes.ino, count: 1) }
    }

    func replyAttributes(_ req: fuse_req_t?, _ attributes: Attributes) {
        var st = stat(attributes)
        fuse_reply_attr(req, &st, timeout(for: attributes))
    }

    func replyOpen(_ req: fuse_req_t?, _ info: UnsafeMutablePointer<fuse_file_info>?, _ opened: OpenedFile) {
        info!.pointee.fh = opened.handle
        mcvfs_file_info_set_cache(info, opened.keepCache ? 1 : 0, opened.directIO ? 1 : 0)
        if fuse_reply_open(req, info) != 0 {
            // The opener was interrupted: nobody will release this handle.
            fileSystem.release(handle: opened.handle)
        }
    }

    func openListing(_ entries: [DirectoryEntry]) -> UInt64 {
        listings.withLock { state in
            defer { state.next += 1 }
            state.open[state.next] = entries
            return state.next
        }
    }

    func listing(_ handle: UInt64) -> [DirectoryEntry]? { listings.withLock { $0.open[handle] } }

    func closeListing(_ handle: UInt64) { _ = listings.withLock { $0.open.removeValue(forKey: handle) } }
}
