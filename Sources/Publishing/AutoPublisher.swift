import Dispatch
import Foundation
import NodeService
import Synchronization

/// A serving mount's automatic publishing (`mount --publish-to`): a `PublishJob` every interval on a thread of its
/// own, and a last one at unmount.
///
/// Publishing never touches the FUSE side: it reads the uppers on disk and talks to the registry on its own
/// thread, so a slow or failing registry costs reads nothing. A failed run is logged and counted (status and
/// metrics) and simply runs again at the next interval: what it did not record as published is taken again.
///
/// Lock order: `state` is a leaf, never held across a run.
public final class AutoPublisher: Sendable {
    struct State {
        var status: MountStatus.Publishing
        var stopping = false
        var started = false
    }

    let job: PublishJob
    let interval: Duration
    /// The keys the mount's images provide now (a refreshed mount provides more over time).
    let provided: @Sendable () -> Set<String>
    let log: NodeLog
    private let state: Mutex<State>
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    public init(
        job: PublishJob, interval: Duration, status: MountStatus.Publishing,
        provided: @escaping @Sendable () -> Set<String>, log: NodeLog
    ) {
        self.job = job
        self.interval = interval
        self.provided = provided
        self.log = log
        self.state = Mutex(State(status: status))
    }

    public var status: MountStatus.Publishing { state.withLock { $0.status } }

    /// Starts the periodic runs; the first comes one interval after this call.
    public func start() {
        let thread = Thread { [self] in
            while true {
                state.withLock { $0.status.nextRun = Self.timestamp(Date().addingTimeInterval(interval.seconds)) }
                _ = wake.wait(timeout: .now() + interval.seconds)
                if state.withLock({ $0.stopping }) { break }
                runOnce()
            }
            finished.signal()
        }
        thread.name = "mcvfs-publish"
        state.withLock { $0.started = true }
        thread.start()
    }

    /// Ends the periodic runs (waiting for one in progress) and runs a last publish for what was compiled since,
    /// giving up after `budget`: an interrupted publish leaves no tag behind, and the next mount takes it again.
    public func stop(within budget: Duration) {
        let started = state.withLock { state -> Bool in
            state.stopping = true
            return state.started
        }
        let deadline = DispatchTime.now() + budget.seconds
        if started {
            wake.signal()
            guard finished.wait(timeout: deadline) == .success else {
                log.warning("publish: a run still in progress at unmount; the next mount publishes what it missed")
                return
            }
        }
        let last = DispatchSemaphore(value: 0)
        Thread.detachNewThread { [self] in
            runOnce()
            last.signal()
        }
        if last.wait(timeout: deadline) == .timedOut {
            log.warning("publish at unmount did not finish within \(budget); the next mount publishes it")
        }
    }

    /// One harvest and push, counted.
    @discardableResult
    public func runOnce() -> PublishJob.Report? {
        let started = Self.timestamp(Date())
        do {
            let report = try job.run(provided: provided())
            let pushed = report.images.filter { $0.state == .pushed }
            state.withLock { state in
                state.status.runs += 1
                state.status.consecutiveFailures = 0
                state.status.lastRun = started
                state.status.lastSuccess = started
                state.status.imagesPushed += pushed.count
                state.status.kernelsPublished += report.kernelsPublished
                if !pushed.isEmpty { state.status.lastPushed = pushed.map(\.tag) }
                state.status.lastSkipped = report.skipped.prefix(20).map { "\($0.path): \($0.reason)" }
            }
            for image in pushed {
                log.info(
                    "published \(job.ledger.repository):\(image.tag) \(image.digest): \(image.keys.count) kernel(s)")
            }
            return report
        } catch {
            let failures = state.withLock { state -> Int in
                state.status.runs += 1
                state.status.failures += 1
                state.status.consecutiveFailures += 1
                state.status.lastRun = started
                state.status.lastError = "\(error)"
                return state.status.consecutiveFailures
            }
            log.warning(
                "publish to \(job.ledger.repository) failed (\(failures) in a row; retried in \(interval)): \(error)")
            return nil
        }
    }
}

extension AutoPublisher {
    static func timestamp(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
