import NIOCore

/// The first handler of each connection: admits it under the connection limit, and closes it when it goes idle
/// (`IdleStateHandler`'s event), outlives its deadline, or sends more than a request's worth of bytes. Sees raw
/// bytes, before the HTTP decoder buffers any.
final class ConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let connections: ConnectionTable
    private let limits: MetricsServer.Limits
    private var received = 0
    private var deadline: Scheduled<Void>?
    private var closing = false

    init(connections: ConnectionTable, limits: MetricsServer.Limits) {
        self.connections = connections
        self.limits = limits
    }

    func channelActive(context: ChannelHandlerContext) {
        guard connections.admit(context.channel) else {
            closing = true
            context.close(promise: nil)
            return
        }
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(limits.requestDeadline)) {
            self.close(context, because: .deadline)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        connections.closed(context.channel)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        received += unwrapInboundIn(data).readableBytes
        guard received <= limits.maxRequestBytes else { return close(context, because: .oversize) }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { return close(context, because: .idle) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closing = true
        context.close(promise: nil)
    }

    private func close(_ context: ChannelHandlerContext, because reason: ConnectionTable.CloseReason) {
        guard !closing else { return }
        closing = true
        connections.closedEarly(reason)
        context.close(promise: nil)
    }
}
