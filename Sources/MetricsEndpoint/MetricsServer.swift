import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The Prometheus endpoint: SwiftNIO's HTTP/1 server on one event loop thread, serving `GET /metrics` to many
/// connections at once, each bounded in time and size (`Limits`), at most `Limits.maxConnections` of them.
/// Bound before the mount starts, so a taken port fails the mount; it accepts once `start()` is called.
public final class MetricsServer: Sendable {
    /// What one client may hold: a scrape sends a few hundred bytes at once and reads a few KiB, so these bounds
    /// cost a real scraper nothing and end a slow or idle client's hold within a second or two.
    public struct Limits: Sendable {
        /// Connections open at once; at the limit, the oldest one still waiting for its request makes room.
        public var maxConnections = 64
        /// A connection that neither sends nor receives a byte for this long is closed.
        public var idleTimeout = Duration.seconds(1)
        /// A connection is closed this long after it was accepted, whatever it is doing: a client that sends its
        /// request a byte at a time, never quite idle, is cut here.
        public var requestDeadline = Duration.seconds(2)
        /// Bytes a connection may send; a request line and headers are far smaller.
        public var maxRequestBytes = 16 * 1024

        public init() {}
    }

    public let address: Address
    private let group: MultiThreadedEventLoopGroup
    private let listener: any Channel
    private let stopped = Mutex(false)

    /// Binds and listens (port 0 picks a free port; `address.port` tells which).
    /// - Parameters:
    ///   - exposition: the registry scrapes read; the server adds its own connection metrics to it.
    ///   - families: the counters and gauges of this moment, asked for on each scrape.
    /// - Throws: `MetricsEndpointError.listen` when the address cannot be bound.
    public init(
        address: Address, exposition: Exposition, limits: Limits = Limits(),
        families: @escaping @Sendable () -> [MetricFamily]
    ) throws(MetricsEndpointError) {
        let connections = ConnectionTable(limit: limits.maxConnections, registry: exposition.registry)
        let scrape: @Sendable () -> [UInt8] = { exposition.render(families()) }
        // The loop's thread inherits this thread's signal mask: the signals libfuse handles (INT, TERM, HUP,
        // PIPE) must reach the FUSE threads, whose blocking reads they interrupt to end the session loop.
        let group = Self.withSignalsBlocked([SIGINT, SIGTERM, SIGHUP, SIGPIPE]) {
            MultiThreadedEventLoopGroup(numberOfThreads: 1)
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accepting starts with `start()`: until the mount serves, connections wait in the backlog.
            .serverChannelOption(.autoRead, value: false)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(allTimeout: TimeAmount(limits.idleTimeout)))
                    try sync.addHandler(ConnectionGuard(connections: connections, limits: limits))
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try sync.addHandler(MetricsHTTPHandler(connections: connections, scrape: scrape))
                }
            }
        do {
            let socketAddress = try SocketAddress(ipAddress: address.host, port: Int(address.port))
            listener = try bootstrap.bind(to: socketAddress).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw .listen(address: address.description, reason: "\(error)")
        }
        var resolved = address
        resolved.port = UInt16(listener.localAddress?.port ?? Int(address.port))
        self.address = resolved
        self.group = group
    }

    /// Accepts connections from now on.
    public func start() {
        listener.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
    }

    /// Closes the listener and every connection, and ends the loop's thread. Idempotent; never call it from the
    /// loop itself (a scrape's `families`).
    public func shutdown() {
        guard
            stopped.withLock({ stopped in
                defer { stopped = true }
                return !stopped
            })
        else { return }
        try? listener.close().wait()
        try? group.syncShutdownGracefully()
    }

    private static func withSignalsBlocked<T>(_ signals: [Int32], _ body: () -> T) -> T {
        var blocked = sigset_t()
        var previous = sigset_t()
        sigemptyset(&blocked)
        for signal in signals { sigaddset(&blocked, signal) }
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        return body()
    }
}
