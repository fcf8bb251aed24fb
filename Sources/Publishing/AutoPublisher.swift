import Dispatch
import Foundation
import NodeService
import Synchronization

/// A serving mount's automatic publishing (`mount --publish-to`): a `PublishJob` every interval, on a thread of its
/// own (`Periodic`), and a last one at unmount.
///
/// Publishing never touches the FUSE side: it reads the uppers on disk and talks to the registry on its own
/// thread, so a slow or failing registry costs reads nothing. A failed run is logged and counted (status and
/// metrics) and simply runs again at the next interval: what it did not record as published is taken again.
///
/// Lock order: `status` is a leaf, never held across a run.
public final class AutoPublisher: Sendable {
    let job: PublishJob
    /// The keys the mount's images provide now (a refreshed mount provides more over time).
    let provided: @Sendable () -> Set<String>
    let log: NodeLog
    private let current: Mutex<Status>
    private let schedule = Mutex<Periodic?>(nil)
    private let interval: Duration

    public init(
        job: PublishJob, interval: Duration, status: Status,
        provided: @escaping @Sendable () -> Set<String>, log: NodeLog
    ) {
        self.job = job
        self.interval = interval
        self.provided = provided
        self.log = log
        self.current = Mutex(status)
    }

    public var status: Status { current.withLock { $0 } }

    /// Starts the periodic runs; the first comes one interval after this call.
    public func start() {
        let periodic = Periodic(
            name: "mcvfs-publish", interval: interval,
            scheduled: { [self] next in current.withLock { $0.nextRun = rfc3339(next) } },
            body: { [self] in runOnce() })
        schedule.withLock { $0 = periodic }
        periodic.start()
    }

    /// Ends the periodic runs (waiting for one in progress) and runs a last publish for what was compiled since,
    /// giving up after `budget`: an interrupted publish leaves no tag behind, and the next mount takes it again.
    public func stop(within budget: Duration) {
        let deadline = DispatchTime.now() + budget.seconds
        if let periodic = schedule.withLock({ $0 }), !periodic.stop(waitingAtMost: budget) {
            log.warning("publish: a run still in progress at unmount; the next mount publishes what it missed")
            return
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
        let started = rfc3339(Date())
        do {
            let report = try job.run(provided: provided())
            let pushed = report.images.filter { $0.state == .pushed }
            current.withLock { status in
                status.runs += 1
                status.consecutiveFailures = 0
                status.lastRun = started
                status.lastSuccess = started
                status.imagesPushed += pushed.count
                status.kernelsPublished += report.kernelsPublished
                if !pushed.isEmpty { status.lastPushed = pushed.map(\.tag) }
                status.lastSkipped = report.skipped.prefix(20).map { "\($0.path): \($0.reason)" }
            }
            for image in pushed {
                log.info(
                    "published \(job.ledger.repository):\(image.tag) \(image.digest): \(image.keys.count) kernel(s)")
            }
            return report
        } catch {
            let failures = current.withLock { status -> Int in
                status.runs += 1
                status.failures += 1
                status.consecutiveFailures += 1
                status.lastRun = started
                status.lastError = "\(error)"
                return status.consecutiveFailures
            }
            log.warning(
                "publish to \(job.ledger.repository) failed (\(failures) in a row; retried in \(interval)): \(error)")
            return nil
        }
    }
}
