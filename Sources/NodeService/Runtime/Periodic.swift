import Dispatch
import Foundation
import Synchronization

/// Work a mount does on an interval beside serving (live refresh, automatic publishing): a thread of its own, so
/// however long a run blocks on the network, no FUSE request and no shared pool waits for it.
///
/// Lock order: `state` is a leaf, never held across a run.
public final class Periodic: Sendable {
    private struct State {
        var started = false
        var stopping = false
    }

    public let interval: Duration
    private let name: String
    private let scheduled: @Sendable (Date) -> Void
    private let body: @Sendable () -> Void
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    /// - Parameters:
    ///   - scheduled: told when the next run is due, before each wait.
    ///   - body: one run; the first comes one interval after `start`.
    public init(
        name: String, interval: Duration, scheduled: @escaping @Sendable (Date) -> Void = { _ in },
        body: @escaping @Sendable () -> Void
    ) {
        self.name = name
        self.interval = interval
        self.scheduled = scheduled
        self.body = body
    }

    public func start() {
        guard
            state.withLock({ state in
                defer { state.started = true }
                return !state.started
            })
        else { return }
        let thread = Thread { [self] in
            while true {
                scheduled(Date().addingTimeInterval(interval.seconds))
                _ = wake.wait(timeout: .now() + interval.seconds)
                if state.withLock({ $0.stopping }) { break }
                body()
            }
            finished.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Ends the runs, waiting up to `budget` for one in progress.
    /// - Returns: false when a run was still going at the deadline (it ends with the process).
    @discardableResult
    public func stop(waitingAtMost budget: Duration) -> Bool {
        let started = state.withLock { state -> Bool in
            state.stopping = true
            return state.started
        }
        guard started else { return true }
        wake.signal()
        return finished.wait(timeout: .now() + budget.seconds) == .success
    }
}

extension Duration {
    /// Seconds, fractions included.
    public var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// RFC 3339 in UTC, to the second, as status documents carry times.
public func rfc3339(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }
