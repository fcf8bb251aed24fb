/// How a node talks to registries, from one value: how long a registry may stall, how many tries each kind of
/// caller makes, and the time budget of a filesystem operation that follows from both. Settings that must change
/// together live here, so that changing one cannot silently break the bound a mount promises.
public struct RegistryPolicy: Sendable, Equatable {
    /// Who a client serves; each role gets its own number of tries.
    public enum Role: Sendable {
        /// A command a person waits for (`push`, `ls`, `fetch`): tries until a transient fault clears.
        case command
        /// A mount's origin: tries twice, so a FUSE operation still ends within its budget.
        case origin
        /// A mount's mirror: tried once, then the origin.
        case mirror
    }

    /// How long a registry may stall (connect, or no bytes arriving) before a request fails.
    public var stall: Duration

    public init(stall: Duration = .seconds(10)) {
        self.stall = stall
    }

    /// Total tries for a client in `role`, the first included.
    public func attempts(_ role: Role) -> Int {
        switch role {
        case .command: return 3
        case .origin: return 2
        case .mirror: return 1
        }
    }

    /// The options of a client in `role`: the stall limit for connecting and for the response, six stalls for a
    /// request held in memory, none for a stream (its length makes any total wrong).
    public func options(_ role: Role, plainHTTP: Bool) -> RegistryOptions {
        let timeouts = HTTPTimeouts(connect: stall, total: stall * 6, stall: stall)
        var streaming = timeouts
        streaming.total = nil
        return RegistryOptions(
            plainHTTP: plainHTTP, retry: RetryPolicy(attempts: attempts(role)), timeouts: timeouts,
            streamingTimeouts: streaming)
    }

    /// The budget of one filesystem operation on a mount: every try it may make, each stalling for `stall` (the
    /// mirror's first when there is one, then the origin's), plus a second for the backoff between tries and
    /// the local work. Whatever a registry does, the operation answers by then.
    public func operationBudget(mirrored: Bool) -> Duration {
        let tries = attempts(.origin) + (mirrored ? attempts(.mirror) : 0)
        return stall * tries + .seconds(1)
    }
}
