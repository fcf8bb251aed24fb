import Synchronization

/// How many connections the endpoint holds at once, and which one gives way at the limit. A connection that has
/// not sent its request yet is the only kind a client can hold without limit of effort (an idle socket), so at the
/// limit a new connection displaces the oldest such one: a scraper, whose request follows its connect at once,
/// is served even while others hold every slot idle. Only when every slot is serving a request is the newcomer
/// refused.
struct ConnectionLimiter<ID: Hashable> {
    enum Admission: Equatable {
        case admitted
        /// Admitted, and this older connection, still waiting for its request, must be closed.
        case admittedDisplacing(ID)
        case refused
    }

    let limit: Int
    private(set) var open: Set<ID> = []
    /// Open connections with no request yet, oldest first.
    private(set) var waiting: [ID] = []

    init(limit: Int) {
        precondition(limit > 0, "a limit admits at least one connection")
        self.limit = limit
    }

    mutating func admit(_ id: ID) -> Admission {
        guard open.count >= limit else {
            open.insert(id)
            waiting.append(id)
            return .admitted
        }
        guard !waiting.isEmpty else { return .refused }
        let displaced = waiting.removeFirst()
        open.remove(displaced)
        open.insert(id)
        waiting.append(id)
        return .admittedDisplacing(displaced)
    }

    /// The connection's request arrived: it is served, and no longer displaceable.
    mutating func requestArrived(_ id: ID) {
        waiting.removeAll { $0 == id }
    }

    mutating func closed(_ id: ID) {
        open.remove(id)
        waiting.removeAll { $0 == id }
    }
}
