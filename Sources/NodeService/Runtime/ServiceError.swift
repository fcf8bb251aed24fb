import Foundation

/// Failures of the node-service parts: catalogs, notification socket, leases, sizes.
public enum ServiceError: Error, Equatable, CustomStringConvertible {
    case invalidSize(String)
    case invalidNotifySocket(String)
    case io(operation: String, path: String, errno: Int32)
    /// Offline, and no online mount or fetch recorded what `reference` resolves to for these GPUs.
    case noRecordedCatalog(reference: String, selection: String)

    public var description: String {
        switch self {
        case .invalidSize(let text):
            return "invalid size '\(text)': use bytes or a number with K, M, G or T (powers of 1024), such as 2G"
        case .invalidNotifySocket(let text):
            return "NOTIFY_SOCKET '\(text)' is not an absolute path or an @abstract name that fits sockaddr_un"
        case .io(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code)))"
        case .noRecordedCatalog(let reference, let selection):
            return "offline: no recorded catalog for \(reference) with GPUs \(selection); mount or `mcvfs fetch` it "
                + "once online with the same --gpu selection"
        }
    }
}
