import Foundation
import Testing

@testable import Registry

/// The token cache is a plain value: its rules are tested without threads or transports.
@Suite struct AuthStateTests {
    private let t0 = Date(timeIntervalSince1970: 1_000_000)

    @Test func tokensExpireEarly() {
        var state = AuthState()
        state.store("a", scope: "repository:x:pull", lifetime: 60, now: t0)
        #expect(state.token(scope: "repository:x:pull", now: t0.addingTimeInterval(53)) == "a")
        #expect(state.token(scope: "repository:x:pull", now: t0.addingTimeInterval(54)) == nil, "refreshed 10% early")
        #expect(state.tokens.isEmpty, "an expired token is dropped")

        state.store("long", scope: "s", lifetime: 3600, now: t0)
        #expect(state.token(scope: "s", now: t0.addingTimeInterval(3569)) == "long")
        #expect(state.token(scope: "s", now: t0.addingTimeInterval(3570)) == nil, "at most 30 s early")
    }

    @Test func scopesAreSeparate() {
        var state = AuthState()
        state.store("pull", scope: "repository:x:pull", lifetime: 60, now: t0)
        #expect(state.token(scope: "repository:x:pull,push", now: t0) == nil)
        #expect(state.token(scope: "repository:y:pull", now: t0) == nil)
    }

    @Test func discardKeepsANewerToken() {
        var state = AuthState()
        state.store("new", scope: "s", lifetime: 60, now: t0)
        state.discard(scope: "s", value: "old")  // another thread already replaced the rejected token
        #expect(state.token(scope: "s", now: t0) == "new")
        state.discard(scope: "s", value: "new")
        #expect(state.token(scope: "s", now: t0) == nil)
    }
}
