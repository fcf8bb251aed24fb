import NIOCore
import NIOHTTP1

/// Answers the one request a connection may make, as soon as its head arrives, then closes the connection: a
/// body (a GET has none) is never read, and `Connection: close` tells the client not to send another.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// A response: status, content type and body.
    struct Response: Equatable {
        var status: HTTPResponseStatus
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]

        /// The response to a request line; pure, so routes are tested without a socket.
        static func to(method: HTTPMethod, uri: String, scrape: () -> [UInt8]) -> Response {
            guard method == .GET else { return Response(status: .methodNotAllowed, body: Array("GET /metrics\n".utf8)) }
            let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            guard path == "/metrics" else {
                return Response(status: .notFound, body: Array("only /metrics is served\n".utf8))
            }
            return Response(status: .ok, contentType: Exposition.contentType, body: scrape())
        }
    }

    private let connections: ConnectionTable
    private let scrape: @Sendable () -> [UInt8]
    private var answered = false

    init(connections: ConnectionTable, scrape: @escaping @Sendable () -> [UInt8]) {
        self.connections = connections
        self.scrape = scrape
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let request) = unwrapInboundIn(data), !answered else { return }
        answered = true
        connections.requestArrived(context.channel)
        let response = Response.to(method: request.method, uri: request.uri, scrape: scrape)
        var headers = HTTPHeaders([
            ("Content-Type", response.contentType), ("Content-Length", "\(response.body.count)"),
            ("Connection", "close"),
        ])
        if response.status == .methodNotAllowed { headers.add(name: "Allow", value: "GET") }
        let head = HTTPResponseHead(version: request.version, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(
            wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
