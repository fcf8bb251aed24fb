import CFuse
import Dispatch
import ImageFS
import Synchronization

/// Tells the kernel to drop cached names (`fuse_lowlevel_notify_inval_entry`).
///
/// The kernel takes the directory's lock to do it. A request that holds that lock itself (a rename, a link, a
/// setattr holding the file's lock while an unlink in the directory waits for it) would deadlock against its own
/// notification, so those go to one serial queue and run once the request lets go; a flush holds no lock and
/// notifies inline, so the caller's next lookup already finds the new name.
final class KernelNotifier: KernelCache {
    /// The session pointer, used only while the session lives: `stop()` runs before it is destroyed.
    private struct Session: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    private let session: Session
    private let queue = DispatchQueue(label: "mcvfs.kernel-notifier")
    private let stopped = Atomic(false)

    init(session: OpaquePointer) {
        self.session = Session(pointer: session)
    }

    func invalidateEntry(parent: UInt64, name: String, synchronously: Bool) {
        guard !stopped.load(ordering: .acquiring) else { return }
        if synchronously {
            send(parent: parent, name: name)
        } else {
            queue.async { [self] in
                if !stopped.load(ordering: .acquiring) { send(parent: parent, name: name) }
            }
        }
    }

    /// ENOENT (the kernel had no such name cached) is the common answer and means there was nothing to do.
    private func send(parent: UInt64, name: String) {
        var bytes = Array(name.utf8CString)
        _ = fuse_lowlevel_notify_inval_entry(session.pointer, parent, &bytes, bytes.count - 1)
    }

    /// No notification after this returns (the session is about to go); queued ones are dropped.
    func stop() {
        stopped.store(true, ordering: .releasing)
        queue.sync {}
    }
}
