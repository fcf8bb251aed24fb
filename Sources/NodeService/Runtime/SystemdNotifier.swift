import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The `sd_notify(3)` datagram protocol, without libsystemd: one `AF_UNIX`/`SOCK_DGRAM` datagram of
/// newline-separated `KEY=VALUE` assignments to the socket named by `$NOTIFY_SOCKET` (a path, or an
/// abstract-namespace name written with a leading `@`). Without `NOTIFY_SOCKET` (not run by systemd with
/// `Type=notify`) every call is a no-op, so callers need not care how they were started.
///
/// See https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html
public struct SystemdNotifier: Sendable {
    public static let environmentVariable = "NOTIFY_SOCKET"

    /// The socket as `$NOTIFY_SOCKET` names it; nil when unset or empty.
    public let socket: String?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let value = environment[Self.environmentVariable] ?? ""
        socket = value.isEmpty ? nil : value
    }

    public var isEnabled: Bool { socket != nil }

    /// Sends `READY=1`, optionally with a `STATUS=` line.
    public func ready(status: String? = nil) throws(ServiceError) {
        try send(["READY=1"] + (status.map { ["STATUS=\(Self.oneLine($0))"] } ?? []))
    }

    public func status(_ text: String) throws(ServiceError) { try send(["STATUS=\(Self.oneLine(text))"]) }

    public func stopping(status: String? = nil) throws(ServiceError) {
        try send(["STOPPING=1"] + (status.map { ["STATUS=\(Self.oneLine($0))"] } ?? []))
    }

    /// Sends the assignments as one datagram. A no-op without a socket.
    public func send(_ assignments: [String]) throws(ServiceError) {
        guard let socket else { return }
        var address = try Self.address(socket)
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .io(operation: "socket", path: socket, errno: errno) }
        defer { close(fd) }
        let message = Array(assignments.joined(separator: "\n").utf8)
        let sent = withUnsafePointer(to: &address.storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                message.withUnsafeBytes { bytes in
                    sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), sockaddrPointer, address.length)
                }
            }
        }
        guard sent == message.count else { throw .io(operation: "sendto", path: socket, errno: errno) }
    }

    /// `sockaddr_un` for a `NOTIFY_SOCKET` value. An abstract name (`@name`) has a NUL first byte and a length
    /// that counts exactly its bytes (no terminator); a path is NUL-terminated and the length counts that NUL.
    static func address(_ name: String) throws(ServiceError) -> (storage: sockaddr_un, length: socklen_t) {
        var storage = sockaddr_un()
        storage.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract {
            bytes[0] = 0
        } else {
            guard bytes.first == UInt8(ascii: "/") else { throw .invalidNotifySocket(name) }
            bytes.append(0)
        }
        let capacity = MemoryLayout.size(ofValue: storage.sun_path)
        guard bytes.count > 1, bytes.count <= capacity else { throw .invalidNotifySocket(name) }
        withUnsafeMutableBytes(of: &storage.sun_path) { path in
            for (i, byte) in bytes.enumerated() { path[i] = byte }
        }
        let length = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count
        return (storage, socklen_t(length))
    }

    private static func oneLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\n", with: " ")
    }
}
