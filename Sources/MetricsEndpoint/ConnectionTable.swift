import NIOCore
import Prometheus
import Synchronization

/// The endpoint's open connections, shared by their handlers: admission at the limit (`ConnectionLimiter`), and
/// the endpoint's own metrics, so an operator sees clients being cut.
///
/// Lock order: `limiter` is a leaf; channels are closed after it is released.
final class ConnectionTable: Sendable {
    /// Why the endpoint closed a connection before answering it.
    enum CloseReason: String, CaseIterable {
        case limit, idle, deadline, oversize
    }

    private struct State {
        var limiter: ConnectionLimiter<ObjectIdentifier>
        var channels: [ObjectIdentifier: any Channel] = [:]
    }

    private let state: Mutex<State>
    private let open: Gauge
    private let closedEarly: [CloseReason: Counter]

    init(limit: Int, registry: PrometheusCollectorRegistry) {
        state = Mutex(State(limiter: ConnectionLimiter(limit: limit)))
        open = registry.makeGauge(
            descriptor: Exposition.name(
                "mcvfs_metrics_connections", help: "Connections the metrics endpoint holds open."))
        let closed = Exposition.name(
            "mcvfs_metrics_connections_closed_total",
            help: "Connections the metrics endpoint closed before answering, by why (limit, idle, deadline, oversize).")
        closedEarly = Dictionary(
            uniqueKeysWithValues: CloseReason.allCases.map { reason in
                (
                    reason,
                    registry.makeCounter(descriptor: closed, labels: [("reason", reason.rawValue)])
                )
            })
    }

    /// Admits a new connection, closing the one it displaces.
    /// - Returns: false when the connection is refused (the caller closes it).
    func admit(_ channel: any Channel) -> Bool {
        let (admission, count, displaced) = state.withLock { state in
            let admission = state.limiter.admit(ObjectIdentifier(channel))
            var displaced: (any Channel)?
            switch admission {
            case .admitted: state.channels[ObjectIdentifier(channel)] = channel
            case .admittedDisplacing(let id):
                state.channels[ObjectIdentifier(channel)] = channel
                displaced = state.channels.removeValue(forKey: id)
            case .refused: break
            }
            return (admission, state.limiter.open.count, displaced)
        }
        open.set(to: Double(count))
        if admission != .admitted { closedEarly[.limit]?.increment() }
        displaced?.close(promise: nil)
        return admission != .refused
    }

    func requestArrived(_ channel: any Channel) {
        state.withLock { $0.limiter.requestArrived(ObjectIdentifier(channel)) }
    }

    func closed(_ channel: any Channel) {
        let count = state.withLock { state in
            state.limiter.closed(ObjectIdentifier(channel))
            state.channels[ObjectIdentifier(channel)] = nil
            return state.limiter.open.count
        }
        open.set(to: Double(count))
    }

    func closedEarly(_ reason: CloseReason) {
        closedEarly[reason]?.increment()
    }
}
