import Dispatch
import Synchronization

/// One run of a piece of work per key at a time. A caller that asks for a key while its work runs waits for that
/// work and shares its outcome, success or error, instead of starting its own; the key's entry is removed the moment
/// the work ends, so the table holds only what is in flight and a later caller starts afresh (nothing is cached,
/// failures included: a retry policy, such as "fail fast for a while after a failure", belongs to the caller).
///
/// Callers block: they are libfuse worker threads and command threads, not tasks. Work must not wait for another
/// flight of the same instance while it leads one (the batch form below orders its waits so that it never does).
/// No lock is held while work runs.
public final class SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    public typealias Outcome = Result<Value, any Error>

    /// The outcome a batch's work gave no answer for.
    public struct Unanswered: Error, CustomStringConvertible {
        public var description: String { "the work in flight gave no result for this key" }
    }

    /// One key's work in the air: its leader publishes the outcome, then lets the waiters go.
    final class Flight: Sendable {
        private let landed = DispatchGroup()
        private let outcome = Mutex<Outcome?>(nil)
        /// Callers that joined this flight instead of running the work.
        let followers = Atomic(0)

        init() { landed.enter() }

        func land(_ result: Outcome) {
            outcome.withLock { $0 = result }
            landed.leave()
        }

        func wait() -> Outcome {
            landed.wait()
            return outcome.withLock { $0! }
        }
    }

    /// The flights in the air, by key. A plain value: claiming and landing are testable without threads.
    struct State {
        var flights: [Key: Flight] = [:]

        /// Splits `keys` (duplicates ignored) into those the caller now leads, each with a new flight registered,
        /// and the flights already in the air it will follow.
        mutating func claim(_ keys: some Sequence<Key>) -> (lead: [(Key, Flight)], follow: [(Key, Flight)]) {
            var lead: [(Key, Flight)] = []
            var follow: [(Key, Flight)] = []
            var seen = Set<Key>()
            for key in keys where seen.insert(key).inserted {
                if let flight = flights[key] {
                    flight.followers.add(1, ordering: .relaxed)
                    follow.append((key, flight))
                } else {
                    let flight = Flight()
                    flights[key] = flight
                    lead.append((key, flight))
                }
            }
            return (lead, follow)
        }

        /// Removes `key`'s entry if it is still `flight` (it always is: only a flight's leader lands it).
        mutating func land(_ key: Key, _ flight: Flight) {
            if flights[key] === flight { flights[key] = nil }
        }
    }

    private let state = Mutex(State())

    public init() {}

    /// Keys whose work is running now.
    public var inFlight: Int { state.withLock { $0.flights.count } }

    /// Whether work for `key` is running now (a hint: it may land the next moment).
    public func isInFlight(_ key: Key) -> Bool { state.withLock { $0.flights[key] != nil } }

    /// Callers waiting for `key`'s flight now.
    public func followers(of key: Key) -> Int {
        state.withLock { $0.flights[key]?.followers.load(ordering: .relaxed) ?? 0 }
    }

    /// Callers waiting for flights now, all keys together (a caller waiting for several counts once for each).
    public var followers: Int {
        state.withLock { $0.flights.values.reduce(0) { $0 + $1.followers.load(ordering: .relaxed) } }
    }

    /// Runs `work` for `key`, or waits for the run already in flight and returns its outcome.
    /// - Throws: what `work` threw, in this caller or in the one it waited for.
    public func run(_ key: Key, _ work: () throws -> Value) throws -> Value {
        let (lead, follow) = state.withLock { $0.claim(CollectionOfOne(key)) }
        if let (_, flight) = follow.first { return try flight.wait().get() }
        let flight = lead[0].1
        let outcome = Result { try work() }
        state.withLock { $0.land(key, flight) }
        flight.land(outcome)
        return try outcome.get()
    }

    /// Runs `work` once for the keys of `keys` no other caller is running, and waits for the others.
    ///
    /// `work` receives the keys this caller leads (possibly none: then it is not called) and answers each; a key
    /// it leaves out fails with `Unanswered`. The led flights land before this caller waits for any other, so two
    /// batches that each follow keys the other leads never deadlock.
    /// - Returns: an outcome for every distinct key of `keys`.
    public func run(
        _ keys: some Sequence<Key>, _ work: ([Key]) -> [Key: Outcome]
    ) -> [Key: Outcome] {
        let (lead, follow) = state.withLock { $0.claim(keys) }
        let answers = lead.isEmpty ? [:] : work(lead.map(\.0))
        var outcomes: [Key: Outcome] = [:]
        outcomes.reserveCapacity(lead.count + follow.count)
        for (key, _) in lead { outcomes[key] = answers[key] ?? .failure(Unanswered()) }
        state.withLock { state in
            for (key, flight) in lead { state.land(key, flight) }
        }
        for (key, flight) in lead { flight.land(outcomes[key]!) }
        for (key, flight) in follow { outcomes[key] = flight.wait() }
        return outcomes
    }
}
