/// The instant by which an operation must be over: every registry interaction made on its behalf (requests,
/// retries and their waits, token requests, redirects) ends by it, whatever the registry says.
///
/// One deadline is in effect per operation (`Deadline.current`): a filesystem request binds one when it starts
/// (`bind`), and everything it runs on its thread shares it. A task-local value does not cross a
/// `DispatchQueue`: work an operation fans out to other threads binds the deadline there again.
public struct Deadline: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let instant: ContinuousClock.Instant

    public init(_ instant: ContinuousClock.Instant) {
        self.instant = instant
    }

    /// `budget` from now.
    public static func after(_ budget: Duration) -> Deadline {
        Deadline(.now + budget)
    }

    /// What is left (zero once passed).
    public var remaining: Duration {
        max(.zero, instant - .now)
    }

    public var hasPassed: Bool { ContinuousClock.now >= instant }

    public static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.instant < rhs.instant }

    public var description: String {
        let left = remaining.components
        let milliseconds = left.seconds * 1000 + left.attoseconds / 1_000_000_000_000_000
        return "deadline in \(milliseconds) ms"
    }

    /// The deadline of the operation running on this thread, if it has one.
    @TaskLocal public static var current: Deadline?

    /// Runs `body` with `deadline` in effect (nil: none), restoring the previous one afterwards.
    public static func bind<T, E: Error>(_ deadline: Deadline?, _ body: () throws(E) -> T) throws(E) -> T {
        let result: Result<T, E> = $current.withValue(deadline) {
            do throws(E) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Runs `body` under the deadline already in effect, or under a fresh one `budget` from now when there is
    /// none (an operation that was not given a deadline by its caller still ends in bounded time).
    public static func ensuring<T, E: Error>(_ budget: Duration, _ body: () throws(E) -> T) throws(E) -> T {
        if current != nil { return try body() }
        return try bind(.after(budget), body)
    }
}
