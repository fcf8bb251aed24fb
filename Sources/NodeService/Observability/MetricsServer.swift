import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A deliberately tiny HTTP/1.1 server for Prometheus scrapes: one thread, blocking POSIX sockets, one request
/// per connection, `GET /metrics` only. Bound before the mount starts, so a taken port fails the mount.
public final class MetricsServer: Sendable {
    public struct Address: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: UInt16

        /// `IPv4:PORT` (`127.0.0.1:9400`), `localhost:PORT`, or `:PORT` (all interfaces).
        public init(parsing text: String) throws(ServiceError) {
            guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
                throw .invalidListenAddress(text)
            }
            var host = String(text[..<colon])
            if host.isEmpty { host = "0.0.0.0" }
            if host == "localhost" { host = "127.0.0.1" }
            var probe = in_addr()
            guard inet_pton(AF_INET, host, &probe) == 1 else { throw .invalidListenAddress(text) }
            self.host = host
            self.port = port
        }

        public var description: String { "\(host):\(port)" }
    }

    private let fd: Int32
    public let address: Address
    private let render: @Sendable () -> String

    /// Binds and listens (port 0 picks a free port; `address.port` tells which).
    /// - Parameter render: the exposition text, produced on each scrape.
    public init(address: Address, render: @escaping @Sendable () -> String) throws(ServiceError) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .io(operation: "socket", path: address.description, errno: errno) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = address.port.bigEndian
        inet_pton(AF_INET, address.host, &sin.sin_addr)
        let bound = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let code = errno
            close(fd)
            throw .io(operation: "listen on", path: address.description, errno: code)
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        var resolved = address
        resolved.port = UInt16(bigEndian: actual.sin_port)
        self.fd = fd
        self.address = resolved
        self.render = render
    }

    /// Serves on a detached thread for the rest of the process's life. The thread blocks the signals libfuse
    /// handles (INT, TERM, HUP, PIPE), so they reach the FUSE threads, whose blocking reads they must interrupt
    /// to end the session loop.
    public func start() {
        let thread = Thread { [self] in
            var signals = sigset_t()
            sigemptyset(&signals)
            for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&signals, signal) }
            pthread_sigmask(SIG_BLOCK, &signals, nil)
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE { continue }
                    return
                }
                handle(client)
                close(client)
            }
        }
        thread.name = "mcvfs-metrics"
        thread.start()
    }

    private func handle(_ client: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while request.count < 16384, !Self.headersComplete(request) {
            let n = read(client, &buffer, buffer.count)
            if n <= 0 { break }
            request += buffer[0..<n]
        }
        let (status, body) = Self.respond(to: request, render: render)
        var response = "HTTP/1.1 \(status)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n"
        let type = status.hasPrefix("200") ? PrometheusText.contentType : "text/plain; charset=utf-8"
        response += "Content-Type: \(type)\r\n\r\n"
        let bytes = Array((response + body).utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            offset += n
        }
    }

    static func headersComplete(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && bytes.indices.dropLast(3).contains { bytes[$0...($0 + 3)].elementsEqual([13, 10, 13, 10]) }
    }

    /// The status line and body for a raw request; pure, so tests need no socket.
    static func respond(to request: [UInt8], render: () -> String) -> (String, String) {
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else { return ("400 Bad Request", "bad request\n") }
        guard parts[0] == "GET" else { return ("405 Method Not Allowed", "GET /metrics\n") }
        let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard path == "/metrics" else { return ("404 Not Found", "only /metrics is served\n") }
        return ("200 OK", render())
    }
}
