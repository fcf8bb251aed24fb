import Testing

@testable import MetricsEndpoint

/// Admission at the connection limit: idle holders make room for newcomers; connections being served do not.
@Suite struct ConnectionLimiterTests {
    @Test func admitsUpToTheLimitThenDisplacesTheOldestWaitingConnection() {
        var limiter = ConnectionLimiter<Int>(limit: 2)
        #expect(limiter.admit(1) == .admitted)
        #expect(limiter.admit(2) == .admitted)
        #expect(limiter.admit(3) == .admittedDisplacing(1))
        #expect(limiter.admit(4) == .admittedDisplacing(2))
        #expect(limiter.open == [3, 4] && limiter.waiting == [3, 4])
    }

    @Test func connectionsBeingServedAreNeverDisplaced() {
        var limiter = ConnectionLimiter<Int>(limit: 2)
        _ = limiter.admit(1)
        _ = limiter.admit(2)
        limiter.requestArrived(1)
        #expect(limiter.admit(3) == .admittedDisplacing(2))
        limiter.requestArrived(3)
        #expect(limiter.admit(4) == .refused)
        #expect(limiter.open == [1, 3] && limiter.waiting.isEmpty)
        limiter.closed(1)
        #expect(limiter.admit(4) == .admitted)
        #expect(limiter.open == [3, 4] && limiter.waiting == [4])
    }
}
