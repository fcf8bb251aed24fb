import Foundation
import Glibc
import NodeService

/// `mount --ready-file`: exists exactly while this daemon's mount serves the mountpoint. A probe of the mountpoint
/// itself (`mcvfs status`) answers for whichever mount is on top, which during a takeover is the one being
/// replaced; this file answers for this daemon.
struct ReadyFile {
    let path: String
    let log: NodeLog

    /// Written whole under a temporary name and renamed, so a reader never sees it half written.
    func create(mountID: UInt64) {
        let temporary = path + ".\(getpid()).tmp"
        do {
            try Data("pid \(getpid())\nmount \(mountID)\n".utf8).write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, path) == 0 else { throw Problem(errno: errno) }
        } catch {
            log.warning("cannot write the ready file \(path): \(error)")
        }
    }

    func remove() { unlink(path) }

    private struct Problem: Error, CustomStringConvertible {
        let errno: Int32
        var description: String { String(cString: strerror(errno)) }
    }
}
