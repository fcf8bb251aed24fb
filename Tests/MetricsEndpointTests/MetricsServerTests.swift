import Foundation
import Glibc
import Testing

@testable import MetricsEndpoint

/// The server over real loopback sockets: routes, and the bounds a hostile client meets.
@Suite struct MetricsServerTests {
    /// A blocking loopback client socket.
    final class Client {
        let fd: Int32

        init(port: UInt16) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr)
            let connected = withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            try #require(connected == 0)
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(fd) }

        func send(_ text: String) {
            _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }

        /// Everything until the server closes the connection (or 10 s pass).
        func readToEnd() -> String {
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                received += buffer[0..<n]
            }
            return String(decoding: received, as: UTF8.self)
        }
    }

    func server(_ limits: MetricsServer.Limits = .init()) throws -> MetricsServer {
        let server = try MetricsServer(
            address: try .init(parsing: "127.0.0.1:0"), exposition: Exposition(), limits: limits
        ) {
            [.single("m_total", help: "M.", kind: .counter, value: 1)]
        }
        server.start()
        return server
    }

    @Test func servesMetricsAndNothingElse() throws {
        let server = try server()
        defer { server.shutdown() }
        func get(_ request: String) throws -> String {
            let client = try Client(port: server.address.port)
            client.send(request)
            return client.readToEnd()
        }
        let ok = try get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        #expect(ok.contains("Connection: close\r\n") && ok.contains("\nm_total 1\n") && ok.hasSuffix("\n"))
        #expect(try get("GET /metrics?x=1 HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 200 OK\r\n"))
        #expect(try get("GET / HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        let post = try get("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        #expect(post.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n") && post.contains("Allow: GET\r\n"))
        #expect(try get("garbage\r\n\r\n").hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
    }

    @Test func idleSlowAndOversizeClientsAreClosedAndCounted() throws {
        var limits = MetricsServer.Limits()
        limits.idleTimeout = .seconds(1)
        limits.requestDeadline = .seconds(2)
        limits.maxRequestBytes = 64
        let server = try server(limits)
        defer { server.shutdown() }
        let idle = try Client(port: server.address.port)
        let oversize = try Client(port: server.address.port)
        oversize.send("GET /metrics HTTP/1.1\r\n" + String(repeating: "X-Pad: y\r\n", count: 20))
        let slow = try Client(port: server.address.port)
        let start = ContinuousClock.now
        for byte in "GET /metrics HTTP/1.1\r\nX-Slow: yyyyyy" {  // a byte every 100 ms: never idle, past the deadline
            slow.send(String(byte))
            usleep(100_000)
        }
        #expect(idle.readToEnd().isEmpty && oversize.readToEnd().isEmpty && slow.readToEnd().isEmpty)
        #expect(ContinuousClock.now - start < .seconds(5))
        let metrics = try Client(port: server.address.port)
        metrics.send("GET /metrics HTTP/1.1\r\n\r\n")
        let text = metrics.readToEnd()
        for reason in ["idle", "oversize", "deadline"] {
            #expect(text.contains(#"mcvfs_metrics_connections_closed_total{reason="\#(reason)"} 1"#), "\(text)")
        }
    }

    @Test func atTheLimitANewConnectionDisplacesTheOldestIdleOne() throws {
        var limits = MetricsServer.Limits()
        limits.maxConnections = 4
        limits.idleTimeout = .seconds(30)
        limits.requestDeadline = .seconds(30)
        let server = try server(limits)
        defer { server.shutdown() }
        let holders = try (0..<6).map { _ in try Client(port: server.address.port) }
        // The two oldest made room for the last two; a scrape displaces the third and is served.
        #expect(holders[0].readToEnd().isEmpty && holders[1].readToEnd().isEmpty)
        let scrape = try Client(port: server.address.port)
        scrape.send("GET /metrics HTTP/1.1\r\n\r\n")
        let text = scrape.readToEnd()
        #expect(text.hasPrefix("HTTP/1.1 200 OK") && text.contains("mcvfs_metrics_connections 4.0"), "\(text)")
        #expect(text.contains(#"mcvfs_metrics_connections_closed_total{reason="limit"} 3"#), "\(text)")
        #expect(holders[2].readToEnd().isEmpty)
    }

    @Test func listenAddresses() throws {
        #expect(try MetricsServer.Address(parsing: "127.0.0.1:9400") == .init(parsing: "localhost:9400"))
        #expect(try MetricsServer.Address(parsing: ":9400").host == "0.0.0.0")
        for bad in ["9400", "127.0.0.1", "127.0.0.1:99999", "example.com:80", "[::1]:80"] {
            #expect(throws: MetricsEndpointError.invalidListenAddress(bad)) {
                try MetricsServer.Address(parsing: bad)
            }
        }
    }

    @Test func aTakenPortFailsAtOnce() throws {
        let server = try server()
        defer { server.shutdown() }
        #expect(throws: MetricsEndpointError.self) {
            try MetricsServer(address: try .init(parsing: "127.0.0.1:\(server.address.port)"), exposition: Exposition())
            {
                []
            }
        }
    }
}
