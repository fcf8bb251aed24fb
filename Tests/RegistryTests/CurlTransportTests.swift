import CurlTransport
import Foundation
import Synchronization
import Testing

@testable import Registry

@Suite struct CurlTransportTests {
    private static let payload = Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })

    private static func server() throws -> TestHTTPServer {
        try TestHTTPServer { request in
            switch request.path {
            case "/hello":
                return .init(
                    status: 200, headers: ["Content-Type": "text/plain", "X-Multi": "a"], body: Data("hello".utf8))
            case "/big": return .init(status: 200, body: payload)
            case "/redirect": return .init(status: 302, headers: ["Location": "/hello"], body: Data("moved".utf8))
            case "/echo": return .init(status: 201, headers: ["X-Method": request.method], body: request.body)
            case "/stall": return nil
            default: return .init(status: 404, body: Data(#"{"errors":[{"code":"NOT_FOUND"}]}"#.utf8))
            }
        }
    }

    private static let timeouts = HTTPTimeouts(connect: .seconds(2), total: .seconds(10), stall: .seconds(2))

    private func request(_ server: TestHTTPServer, _ path: String, method: HTTPRequest.Method = .get, body: Data? = nil)
        -> HTTPRequest
    {
        HTTPRequest(
            method: method, url: URL(string: server.baseURL + path)!, headers: ["X-Test": "1"], body: body,
            timeouts: Self.timeouts)
    }

    @Test func basicGet() throws {
        let server = try Self.server()
        defer { server.stop() }
        let transport = try CurlTransport()
        let response = try transport.send(request(server, "/hello"), maxBodySize: 1024)
        #expect(response.status == 200)
        #expect(response.body == Data("hello".utf8))
        #expect(response.head.headers["content-type"] == "text/plain")
        #expect(response.head.contentLength == 5)
        #expect(server.requests.first?.headers["x-test"] == "1")

        // Streams arrive whole and in order, on reused handles.
        for _ in 0..<3 {
            var received = Data()
            var heads = 0
            let head = try transport.send(
                request(server, "/big"), head: { _ in heads += 1 },
                body: {
                    received.append(contentsOf: $0)
                })
            #expect(head.status == 200)
            #expect(heads == 1)
            #expect(received == Self.payload)
        }
    }

    @Test func concurrentTransfersSharePooledHandles() throws {
        let server = try Self.server()
        defer { server.stop() }
        let transport = try CurlTransport(configuration: .init(maxIdleHandles: 2))
        let urls = (0..<12).map { _ in request(server, "/big") }
        let good = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: urls.count) { i in
            if let response = try? transport.send(urls[i], maxBodySize: 1 << 20), response.body == Self.payload {
                good.withLock { $0 += 1 }
            }
        }
        #expect(good.withLock { $0 } == urls.count)
    }

    @Test func redirectIsNotFollowed() throws {
        let server = try Self.server()
        defer { server.stop() }
        let response = try CurlTransport().send(request(server, "/redirect"), maxBodySize: 1024)
        #expect(response.status == 302)
        #expect(response.head.headers["Location"] == "/hello")
        #expect(server.requests.map(\.path) == ["/redirect"])
    }

    @Test func uploadAndHead() throws {
        let server = try Self.server()
        defer { server.stop() }
        let transport = try CurlTransport()
        let body = Data("manifest bytes".utf8)
        let put = try transport.send(request(server, "/echo", method: .put, body: body), maxBodySize: 1024)
        #expect(put.status == 201)
        #expect(put.body == body)
        #expect(put.head.headers["X-Method"] == "PUT")
        #expect(server.requests.last?.headers["content-type"] == nil, "no form-encoding label on raw bodies")

        let head = try transport.send(request(server, "/big", method: .head), maxBodySize: 0)
        #expect(head.status == 200)
        #expect(head.head.contentLength == Int64(Self.payload.count))
    }

    @Test func stalledServerTimesOut() throws {
        let server = try Self.server()
        defer { server.stop() }
        var stalled = request(server, "/stall")
        stalled.timeouts.total = nil  // only the stall limit may end it
        let start = ContinuousClock.now
        #expect {
            try CurlTransport().send(stalled, maxBodySize: 1024)
        } throws: { error in
            guard case RegistryError.timeout(let text) = error else { return false }
            return text.contains("/stall")
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .seconds(1.5) && elapsed < .seconds(6), "took \(elapsed)")
    }

    @Test func connectionRefused() throws {
        let server = try Self.server()
        let url = server.baseURL
        server.stop()
        #expect {
            try CurlTransport().send(
                HTTPRequest(url: URL(string: url + "/hello")!, timeouts: Self.timeouts), maxBodySize: 10)
        } throws: { error in
            (error as? RegistryError)?.isTransient == true
        }
    }

    @Test func sinkErrorAbortsTransfer() throws {
        struct Stop: Error {}
        let server = try Self.server()
        defer { server.stop() }
        var received = 0
        #expect(throws: Stop.self) {
            try CurlTransport().send(
                request(server, "/big"), head: { _ in },
                body: { chunk in
                    received += chunk.count
                    throw Stop()
                })
        }
        #expect(received > 0 && received < Self.payload.count)
    }

    @Test func tooLargeBody() throws {
        let server = try Self.server()
        defer { server.stop() }
        #expect(throws: RegistryError.tooLarge(url: server.baseURL + "/big", limit: 1000)) {
            try CurlTransport().send(request(server, "/big"), maxBodySize: 1000)
        }
    }

    @Test func clientOverCurlEndToEnd() throws {
        // The whole stack against the local server: plain HTTP, 404 decoded, no auth needed.
        let server = try Self.server()
        defer { server.stop() }
        let client = try RegistryClient(
            registry: "127.0.0.1:\(server.port)", transport: CurlTransport(),
            options: RegistryOptions(plainHTTP: true, retry: .none))
        #expect {
            try client.getManifest(repository: "org/cache", reference: "v1")
        } throws: { error in
            guard case RegistryError.notFound(let diagnostics) = error else { return false }
            return diagnostics.codes == ["NOT_FOUND"]
        }
    }
}
