import Foundation
import TimeBudget

/// The seam between `RegistryClient` and the network: one blocking, streaming request.
///
/// A transport sends exactly the request it is given. It never follows redirects, never adds
/// authentication and never decompresses bodies: `RegistryClient` owns those decisions because
/// they depend on the registry protocol (drop `Authorization` on a cross-host redirect, verify raw bytes).
/// Implementations must be safe to call from many threads at once (libfuse workers).
public protocol HTTPTransport: Sendable {
    /// Sends `request` and streams the response.
    ///
    /// - Parameters:
    ///   - request: The request, including its timeouts.
    ///   - head: Called once with the final (non-1xx) response head, before any body byte.
    ///     An error it throws aborts the transfer and is rethrown unchanged.
    ///   - body: Called with each chunk of the body, in order. An error it throws aborts the transfer
    ///     and is rethrown unchanged.
    /// - Returns: The response head (the same value `head` saw).
    /// - Throws: `RegistryError.timeout` or `.transport` for network failures, or whatever a callback threw.
    func send(
        _ request: HTTPRequest,
        head: (HTTPResponseHead) throws -> Void,
        body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponseHead
}

extension HTTPTransport {
    /// Sends `request` and collects the body, refusing more than `maxBodySize` bytes.
    ///
    /// - Throws: `RegistryError.tooLarge` when the body (or its declared `Content-Length`) exceeds the cap.
    public func send(_ request: HTTPRequest, maxBodySize: Int) throws -> HTTPResponse {
        var data = Data()
        let head = try send(
            request,
            head: { head in
                // A HEAD response's Content-Length describes the resource, not a body.
                if request.method != .head, let length = head.contentLength, length > Int64(maxBodySize) {
                    throw RegistryError.tooLarge(url: request.url.absoluteString, limit: Int64(maxBodySize))
                }
            },
            body: { chunk in
                guard data.count + chunk.count <= maxBodySize else {
                    throw RegistryError.tooLarge(url: request.url.absoluteString, limit: Int64(maxBodySize))
                }
                data.append(contentsOf: chunk)
            })
        return HTTPResponse(head: head, body: data)
    }
}

/// An HTTP request as `RegistryClient` hands it to a transport.
public struct HTTPRequest: Sendable, Equatable {
    public enum Method: String, Sendable, Equatable {
        case get = "GET"
        case head = "HEAD"
        case post = "POST"
        case put = "PUT"
        case patch = "PATCH"
        case delete = "DELETE"
    }

    public var method: Method
    public var url: URL
    public var headers: HTTPHeaders
    public var body: Data?
    public var timeouts: HTTPTimeouts

    public init(
        method: Method = .get, url: URL, headers: HTTPHeaders = [:], body: Data? = nil,
        timeouts: HTTPTimeouts = HTTPTimeouts()
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeouts = timeouts
    }
}

/// How long a transport may wait. A stalled transfer must fail in bounded time even when it is
/// a multi-gigabyte blob stream that has no sensible total limit.
public struct HTTPTimeouts: Sendable, Equatable {
    /// Limit on establishing the connection (TCP and TLS).
    public var connect: Duration
    /// Limit on the whole request; `nil` for streams whose length makes any total limit wrong.
    public var total: Duration?
    /// The transfer fails when fewer than `stallBytesPerSecond` bytes per second arrive for this long
    /// (including the wait for the response head).
    public var stall: Duration
    /// 1 KiB/s by default: a registry dripping a few bytes a second is as stuck as a silent one (a 1 byte/s drip
    /// would otherwise hold a layer download forever), and any working link is thousands of times faster.
    public var stallBytesPerSecond: Int

    public init(
        connect: Duration = .seconds(10), total: Duration? = .seconds(60), stall: Duration = .seconds(20),
        stallBytesPerSecond: Int = 1024
    ) {
        self.connect = connect
        self.total = total
        self.stall = stall
        self.stallBytesPerSecond = stallBytesPerSecond
    }

    /// These limits cut to what is left before `deadline`: connecting and the whole request end by it.
    public func bounded(by deadline: Deadline?) -> HTTPTimeouts {
        guard let deadline else { return self }
        let left = deadline.remaining
        var bounded = self
        bounded.connect = min(connect, left)
        bounded.total = min(total ?? left, left)
        return bounded
    }
}

extension Duration {
    /// Whole milliseconds, rounded up so a positive limit never becomes 0 (which libcurl reads as "no limit").
    public var roundedUpMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return attoseconds % 1_000_000_000_000_000 > 0 ? ms + 1 : ms
    }
}

/// Status line and headers of a response.
public struct HTTPResponseHead: Sendable, Equatable {
    public var status: Int
    public var headers: HTTPHeaders
    /// The URL that answered (the request's URL: transports do not follow redirects).
    public var url: URL

    public init(status: Int, headers: HTTPHeaders = [:], url: URL) {
        self.status = status
        self.headers = headers
        self.url = url
    }

    public var contentLength: Int64? {
        headers["Content-Length"].flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
    }
    /// `Content-Type` without parameters (`; charset=utf-8`).
    public var contentType: String? {
        headers["Content-Type"].map { $0.split(separator: ";").first.map(String.init) ?? $0 }
            .map { $0.trimmingCharacters(in: .whitespaces) }
    }
}

/// A whole response, for bodies small enough to hold.
public struct HTTPResponse: Sendable, Equatable {
    public var head: HTTPResponseHead
    public var body: Data

    public init(head: HTTPResponseHead, body: Data) {
        self.head = head
        self.body = body
    }

    public var status: Int { head.status }
}

/// Header fields in order; names compare case-insensitively and may repeat (`WWW-Authenticate`, `Link`).
public struct HTTPHeaders: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral {
    public private(set) var fields: [(name: String, value: String)]

    public init(_ fields: [(name: String, value: String)] = []) { self.fields = fields }

    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { (name: $0.0, value: $0.1) }
    }

    /// The first value of `name`; setting replaces every value (nil removes them).
    public subscript(name: String) -> String? {
        get { fields.first { $0.name.caseInsensitiveEquals(name) }?.value }
        set {
            fields.removeAll { $0.name.caseInsensitiveEquals(name) }
            if let newValue { fields.append((name: name, value: newValue)) }
        }
    }

    public func values(_ name: String) -> [String] {
        fields.filter { $0.name.caseInsensitiveEquals(name) }.map(\.value)
    }

    public mutating func add(_ name: String, _ value: String) { fields.append((name: name, value: value)) }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }

    public static func == (lhs: HTTPHeaders, rhs: HTTPHeaders) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.name.caseInsensitiveEquals($1.name) && $0.value == $1.value }
    }
}

extension String {
    func caseInsensitiveEquals(_ other: String) -> Bool {
        utf8.count == other.utf8.count && lowercased() == other.lowercased()
    }
}
