import Foundation

/// Failures of the metrics endpoint: a listen address that does not parse, a port that cannot be bound.
public enum MetricsEndpointError: Error, Equatable, CustomStringConvertible {
    case invalidListenAddress(String)
    /// Binding or listening failed (the port is taken, the address is not local); `reason` is the system's.
    case listen(address: String, reason: String)

    public var description: String {
        switch self {
        case .invalidListenAddress(let text):
            return "invalid listen address '\(text)': use IPv4:PORT, such as 127.0.0.1:9400"
        case .listen(let address, let reason):
            return "cannot serve metrics at \(address): \(reason); choose another --metrics-listen"
        }
    }
}
