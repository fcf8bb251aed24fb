import Dispatch
import Foundation

/// Runs `body` on a thread of its own, entered in `group` until it returns. Tests that park callers on purpose
/// use threads, not the dispatch pool, which on Linux adds a worker for a blocked one only every so often.
public func spawn(in group: DispatchGroup, _ body: @escaping @Sendable () -> Void) {
    group.enter()
    let thread = Thread {
        body()
        group.leave()
    }
    thread.start()
}

/// Runs `body` on `count` threads at once and waits for them all.
public func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<count { spawn(in: group) { body(i) } }
    group.wait()
}

/// Waits until `condition` holds: a hang guard of 10 s, never a timing assertion.
public func eventually(_ condition: () -> Bool) -> Bool {
    for _ in 0..<10_000 {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}
