import Foundation
import ImageFS
import Synchronization

/// The sizes of a mount's uppers, measured in the background and served as last measured.
///
/// Any user may stat or open `status.json`, and a user may put any number of files in their upper: measuring on
/// each request would let one user make the daemon walk another's tree at will (20,000 files cost 1.4 s per
/// `stat`). So a request never walks: it serves the last measurement (with its start time in the document), and
/// starts a new one on a utility queue when that is older than `interval` and none is running. Each walk visits at
/// most `entryLimit` entries within `timeLimit`; one that stops there says so (`partial`).
public final class UpperSizes: Sendable {
    /// One measurement of every upper.
    public struct Measurement: Sendable, Equatable {
        public var uppers: [MountStatus.Upper]
        /// When its walk started: everything written before is counted.
        public var startedAt: Date
        /// A walk stopped at `entryLimit` or `timeLimit`: the sizes count only what it visited.
        public var partial: Bool
    }

    public static let interval = Duration.seconds(5)
    static let entryLimit = 100_000
    static let timeLimit = Duration.seconds(1)

    private struct State {
        var last: Measurement?
        var started: ContinuousClock.Instant?
        var running = false
    }

    let root: String
    private let state = Mutex(State())

    public init(root: String) {
        self.root = root
    }

    /// The last measurement (nil before the first ends), starting the next in the background when it is due.
    public func current() -> Measurement? {
        let start = state.withLock { state -> Bool in
            let due = state.started.map { ContinuousClock.now - $0 >= Self.interval } ?? true
            guard due && !state.running else { return false }
            state.running = true
            state.started = .now
            return true
        }
        if start {
            DispatchQueue.global(qos: .utility).async { [self] in
                let measurement = Self.measure(root)
                state.withLock {
                    $0.last = measurement
                    $0.running = false
                }
            }
        }
        return state.withLock { $0.last }
    }

    /// The uppers under `root` (one per uid, or `shared`): names only, which are cheap. The daemon makes them,
    /// one per user who wrote, so their number is bounded by the users of the node.
    static func names(in root: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.filter { !OverlayFileSystem.isBookkeeping($0) }.sorted()
    }

    /// Size of each upper under `root`: the files users wrote, the overlay's whiteouts and the daemon's work
    /// directories not; at most `entries` entries visited in all, within `time`.
    static func measure(_ root: String, entries: Int = entryLimit, time: Duration = timeLimit) -> Measurement {
        let manager = FileManager.default
        let startedAt = Date()
        let deadline = ContinuousClock.now + time
        var visited = 0
        var partial = false
        let uppers = names(in: root).map { name in
            var bytes: Int64 = 0
            var files = 0
            let enumerator = manager.enumerator(atPath: root + "/" + name)
            while !partial, let path = enumerator?.nextObject() as? String {
                visited += 1
                if visited > entries || ContinuousClock.now >= deadline {
                    partial = true
                    break
                }
                guard let attributes = enumerator?.fileAttributes,
                    attributes[.type] as? FileAttributeType == .typeRegular,
                    !OverlayFileSystem.isBookkeeping((path as NSString).lastPathComponent)
                else { continue }
                bytes += (attributes[.size] as? Int64) ?? Int64((attributes[.size] as? Int) ?? 0)
                files += 1
            }
            return MountStatus.Upper(name: name, bytes: bytes, files: files)
        }
        return Measurement(uppers: uppers, startedAt: startedAt, partial: partial)
    }
}
