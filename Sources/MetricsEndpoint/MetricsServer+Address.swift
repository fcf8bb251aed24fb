import Glibc

extension MetricsServer {
    /// Where the endpoint listens: an IPv4 address and a port (0 picks a free one).
    public struct Address: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: UInt16

        /// `IPv4:PORT` (`127.0.0.1:9400`), `localhost:PORT`, or `:PORT` (all interfaces).
        public init(parsing text: String) throws(MetricsEndpointError) {
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
}
