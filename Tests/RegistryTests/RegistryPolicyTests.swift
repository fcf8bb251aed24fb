import Registry
import Testing

@Suite struct RegistryPolicyTests {
    @Test func theBudgetCoversEveryTryOfEverySource() {
        let policy = RegistryPolicy(stall: .seconds(3))
        #expect(policy.operationBudget(mirrored: false) == .seconds(3 * policy.attempts(.origin) + 1))
        #expect(
            policy.operationBudget(mirrored: true)
                == .seconds(3 * (policy.attempts(.origin) + policy.attempts(.mirror)) + 1))
    }

    @Test func eachRoleGetsItsTriesAndTheStallLimit() {
        let policy = RegistryPolicy(stall: .seconds(4))
        let origin = policy.options(.origin, plainHTTP: true)
        #expect(origin.plainHTTP)
        #expect(origin.retry.attempts == policy.attempts(.origin))
        #expect(origin.timeouts.stall == .seconds(4) && origin.timeouts.connect == .seconds(4))
        #expect(origin.timeouts.total == .seconds(24))
        #expect(origin.streamingTimeouts.total == nil && origin.streamingTimeouts.stall == .seconds(4))
        #expect(policy.options(.mirror, plainHTTP: false).retry.attempts == 1)
        #expect(policy.attempts(.command) > policy.attempts(.origin))
    }
}
