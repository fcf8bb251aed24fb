import Foundation

/// Failures of the node-service parts: notification socket, metrics listener, leases, sizes.
public enum ServiceError: Error, Equatable, CustomStringConvertible {
    case invalidSize(String)
    case invalidListenAddress(String)
    case invalidNotifySocket(String)
    case io(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .invalidSize(let text):
            return "invalid size '\(text)': use bytes or a number with K, M, G or T (powers of 1024), such as 2G"
        case .invalidListenAddress(let text):
            return "invalid listen address '\(text)': use IPv4:PORT, such as 127.0.0.1:9400"
        case .invalidNotifySocket(let text):
            return "NOTIFY_SOCKET '\(text)' is not an absolute path or an @abstract name that fits sockaddr_un"
        case .io(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code)))"
        }
    }
}
