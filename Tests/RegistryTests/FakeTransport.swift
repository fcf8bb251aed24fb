import Foundation
import Synchronization

@testable import Registry

/// A scripted `HTTPTransport`: a handler decides each reply; every request is recorded.
final class FakeTransport: HTTPTransport {
    struct Reply {
        var status: Int
        var headers: HTTPHeaders = [:]
        var body = Data()
        /// Deliver this many body bytes, then fail as a dropped connection would.
        var failAfter: Int?
        /// Announce this `Content-Length` instead of the body's real size (a truncated response).
        var contentLength: Int?

        init(
            _ status: Int, headers: HTTPHeaders = [:], body: Data = Data(), failAfter: Int? = nil,
            contentLength: Int? = nil
        ) {
            self.status = status
            self.headers = headers
            self.body = body
            self.failAfter = failAfter
            self.contentLength = contentLength
        }

        init(_ status: Int, headers: HTTPHeaders = [:], json: String) {
            var headers = headers
            if headers["Content-Type"] == nil { headers["Content-Type"] = "application/json" }
            self.init(status, headers: headers, body: Data(json.utf8))
        }
    }

    /// `seen` counts earlier requests with the same method, host and path.
    typealias Handler = @Sendable (_ request: HTTPRequest, _ seen: Int) -> Reply

    private let handler: Handler
    private let log = Mutex<[HTTPRequest]>([])
    /// Bytes per body callback, small enough that every body arrives in several chunks.
    let chunkSize: Int

    init(chunkSize: Int = 1000, handler: @escaping Handler) {
        self.chunkSize = chunkSize
        self.handler = handler
    }

    var requests: [HTTPRequest] { log.withLock { $0 } }

    func requests(toHost host: String) -> [HTTPRequest] { requests.filter { $0.url.host == host } }

    func send(
        _ request: HTTPRequest, head: (HTTPResponseHead) throws -> Void, body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponseHead {
        let seen = log.withLock { log in
            defer { log.append(request) }
            return log.filter {
                $0.method == request.method && $0.url.host == request.url.host && $0.url.path == request.url.path
            }.count
        }
        let reply = handler(request, seen)
        var headers = reply.headers
        if headers["Content-Length"] == nil {
            headers["Content-Length"] = String(reply.contentLength ?? reply.body.count)
        }
        let response = HTTPResponseHead(status: reply.status, headers: headers, url: request.url)
        try head(response)
        guard request.method != .head else { return response }
        let bytes = reply.failAfter.map { reply.body.prefix($0) } ?? reply.body
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let end = min(offset + chunkSize, bytes.endIndex)
            try bytes[offset..<end].withUnsafeBytes { try body($0) }
            offset = end
        }
        if reply.failAfter != nil { throw RegistryError.transport("\(request.url): connection reset by fake") }
        return response
    }
}

/// Records the waits a client asked for instead of sleeping.
final class SleepRecorder: Sendable {
    private let waits = Mutex<[Duration]>([])
    var recorded: [Duration] { waits.withLock { $0 } }
    func sleep(_ duration: Duration) { waits.withLock { $0.append(duration) } }
}

/// A clock tests move by hand.
final class TestClock: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 += seconds } }
}

extension Data {
    init(repeating text: String, count: Int) {
        var data = Data()
        while data.count < count { data.append(contentsOf: text.utf8) }
        self = data.prefix(count)
    }
}
