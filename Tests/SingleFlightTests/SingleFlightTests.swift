import Dispatch
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import SingleFlight

/// Opens once; every thread waiting on it goes on.
private final class Latch: Sendable {
    private let group = DispatchGroup()
    init() { group.enter() }
    func open() { group.leave() }
    func wait() { group.wait() }
}

private struct Failure: Error, Equatable {
    var code: Int
}

@Suite struct SingleFlightStateTests {
    @Test func claimLeadsNewKeysAndFollowsKeysInFlight() {
        var state = SingleFlight<String, Int>.State()
        let first = state.claim(["a", "b", "a"])
        #expect(first.lead.map(\.0) == ["a", "b"])
        #expect(first.follow.isEmpty)
        let second = state.claim(["b", "c"])
        #expect(second.lead.map(\.0) == ["c"])
        #expect(second.follow.map(\.0) == ["b"])
        #expect(second.follow[0].1 === first.lead[1].1)
        #expect(state.flights.count == 3)
    }

    @Test func landingRemovesOnlyTheFlightItLands() {
        var state = SingleFlight<String, Int>.State()
        let old = state.claim(["a"]).lead[0].1
        state.land("a", old)
        #expect(state.flights.isEmpty)
        let fresh = state.claim(["a"]).lead[0].1
        state.land("a", old)  // a stale landing leaves the new flight alone
        #expect(state.flights["a"] === fresh)
    }
}

@Suite struct SingleFlightTests {
    @Test func concurrentCallersShareOneRun() {
        let flights = SingleFlight<String, Int>()
        let runs = Mutex(0)
        let release = Latch()
        let results = Mutex<[Int]>([])
        let leaderStarted = Latch()
        spawn(in: DispatchGroup()) {
            let value = try? flights.run("k") {
                runs.withLock { $0 += 1 }
                leaderStarted.open()
                release.wait()
                return 42
            }
            results.withLock { $0.append(value ?? -1) }
        }
        leaderStarted.wait()
        let followers = DispatchGroup()
        for _ in 0..<16 {
            spawn(in: followers) {
                let value = try? flights.run("k") {
                    runs.withLock { $0 += 1 }
                    return -2
                }
                results.withLock { $0.append(value ?? -1) }
            }
        }
        // Every follower joined the leader's flight before it lands.
        #expect(eventually { flights.followers(of: "k") == 16 })
        #expect(flights.inFlight == 1)
        release.open()
        followers.wait()
        #expect(eventually { results.withLock { $0.count } == 17 })
        #expect(runs.withLock { $0 } == 1)
        #expect(results.withLock { $0 } == Array(repeating: 42, count: 17))
        #expect(flights.inFlight == 0)
    }

    @Test func followersShareTheLeadersError() {
        let flights = SingleFlight<Int, Int>()
        let release = Latch()
        let started = Latch()
        /// What each caller saw: the value, or the failure's code negated.
        let seen = Mutex<[Int]>([])
        @Sendable func record(_ body: () throws -> Int) {
            let outcome: Int
            do { outcome = try body() } catch let failure as Failure { outcome = -failure.code } catch { outcome = 0 }
            seen.withLock { $0.append(outcome) }
        }
        let all = DispatchGroup()
        spawn(in: all) {
            record {
                try flights.run(7) {
                    started.open()
                    release.wait()
                    throw Failure(code: 7)
                }
            }
        }
        started.wait()
        for _ in 0..<4 {
            spawn(in: all) { record { try flights.run(7) { 1 } } }
        }
        #expect(eventually { flights.followers(of: 7) == 4 })
        release.open()
        all.wait()
        #expect(seen.withLock { $0 } == Array(repeating: -7, count: 5))
        #expect(flights.inFlight == 0)
    }

    @Test func aFailureIsNotCached() throws {
        let flights = SingleFlight<Int, Int>()
        #expect(throws: Failure(code: 1)) { try flights.run(1) { throw Failure(code: 1) } }
        #expect(flights.inFlight == 0)
        #expect(try flights.run(1) { 5 } == 5)
    }

    @Test func entriesGoWhenFlightsLand() throws {
        let flights = SingleFlight<Int, Int>()
        concurrently(64) { i in _ = try? flights.run(i % 8) { i } }
        #expect(flights.inFlight == 0)
        let outcomes = flights.run(0..<100) { led in Dictionary(uniqueKeysWithValues: led.map { ($0, .success($0)) }) }
        #expect(outcomes.count == 100)
        #expect(flights.inFlight == 0)
        #expect(!flights.isInFlight(3))
    }
}

@Suite struct SingleFlightBatchTests {
    @Test func aBatchLeadsFreeKeysAndWaitsForTheOthers() throws {
        let flights = SingleFlight<String, String>()
        let release = Latch()
        let started = Latch()
        let firstBatch = Mutex<[String: Result<String, any Error>]>([:])
        let done = DispatchGroup()
        spawn(in: done) {
            let outcomes = flights.run(["a", "b"]) { led in
                started.open()
                release.wait()
                return Dictionary(uniqueKeysWithValues: led.map { ($0, .success("first:" + $0)) })
            }
            firstBatch.withLock { $0 = outcomes }
        }
        started.wait()
        let led = Mutex<[String]>([])
        let second = Mutex<[String: Result<String, any Error>]>([:])
        spawn(in: done) {
            let outcomes = flights.run(["b", "c"]) { keys in
                led.withLock { $0 = keys }
                return Dictionary(uniqueKeysWithValues: keys.map { ($0, .success("second:" + $0)) })
            }
            second.withLock { $0 = outcomes }
        }
        // The second batch ran its own key at once and is now waiting for "b" only.
        #expect(eventually { led.withLock { $0 } == ["c"] })
        #expect(eventually { flights.inFlight == 2 })
        release.open()
        done.wait()
        let outcomes = second.withLock { $0 }
        #expect(try outcomes["b"]?.get() == "first:b")
        #expect(try outcomes["c"]?.get() == "second:c")
        #expect(try firstBatch.withLock { $0 }["a"]?.get() == "first:a")
        #expect(flights.inFlight == 0)
    }

    @Test func keysTheWorkLeavesOutFailAlone() {
        let flights = SingleFlight<Int, Int>()
        let outcomes = flights.run([1, 2, 3]) { led in [1: .success(10), 3: .failure(Failure(code: 3))] }
        #expect((try? outcomes[1]?.get()) == 10)
        #expect(throws: SingleFlight<Int, Int>.Unanswered.self) { try outcomes[2]?.get() }
        #expect(throws: Failure(code: 3)) { try outcomes[3]?.get() }
        #expect(flights.inFlight == 0)
    }

    @Test func batchesFollowingEachOtherDoNotDeadlock() {
        let flights = SingleFlight<Int, Int>()
        let outcomes = Mutex(0)
        concurrently(32) { i in
            // Overlapping batches in opposite orders: each leads some keys and follows the rest.
            let keys = i % 2 == 0 ? Array(0..<20) : Array((0..<20).reversed())
            let result = flights.run(keys) { led in
                usleep(200)
                return Dictionary(uniqueKeysWithValues: led.map { ($0, .success($0 * 2)) })
            }
            if result.count == 20, result.allSatisfy({ (try? $0.value.get()) == $0.key * 2 }) {
                outcomes.withLock { $0 += 1 }
            }
        }
        #expect(outcomes.withLock { $0 } == 32)
        #expect(flights.inFlight == 0)
    }
}
