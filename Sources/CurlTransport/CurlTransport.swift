import CCurl
import Foundation
import Registry
import Synchronization

/// `HTTPTransport` over libcurl's easy interface: blocking transfers on the caller's thread, which is
/// what libfuse worker threads want.
///
/// Easy handles are pooled so their connection caches survive between requests (keep-alive, TLS session
/// reuse). HTTP/2 is negotiated over TLS when the server offers it, HTTP/1.1 otherwise. Redirects are never
/// followed here (`RegistryClient` decides what credentials a redirect target may see), bodies are never
/// decoded (they are content-addressed), and every transfer has connect and stall limits so a dead server
/// fails a FUSE read in bounded time.
public final class CurlTransport: HTTPTransport, Sendable {
    public struct Configuration: Sendable {
        /// Extra CA bundle (PEM) to trust instead of the system store, for private registries.
        public var caFile: String?
        /// Offer HTTP/2 over TLS (`CURL_HTTP_VERSION_2TLS`); false pins HTTP/1.1.
        public var http2: Bool
        /// Idle easy handles kept for reuse; more concurrent requests than this create and free handles.
        public var maxIdleHandles: Int
        /// libcurl's own trace on stderr, for debugging a registry.
        public var verbose: Bool

        public init(caFile: String? = nil, http2: Bool = true, maxIdleHandles: Int = 16, verbose: Bool = false) {
            self.caFile = caFile
            self.http2 = http2
            self.maxIdleHandles = maxIdleHandles
            self.verbose = verbose
        }
    }

    public let configuration: Configuration
    /// Handles not in use. Held only to push or pop; never across a transfer.
    private let idle = Mutex<[EasyHandle]>([])

    /// `curl_global_init` is not thread-safe and must run once before any handle exists;
    /// a `static let` initialiser runs exactly once, under Swift's own lock.
    private static let globalInit: CURLcode = mcvfs_curl_global_init()

    /// - Throws: `RegistryError.transport` when libcurl cannot initialise (no TLS library, out of memory).
    public init(configuration: Configuration = Configuration()) throws(RegistryError) {
        try check(Self.globalInit, "curl_global_init")
        self.configuration = configuration
    }

    public func send(
        _ request: HTTPRequest,
        head: (HTTPResponseHead) throws -> Void,
        body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponseHead {
        let handle = try checkout()
        defer { checkin(handle) }
        return try withoutActuallyEscaping(head) { head in
            try withoutActuallyEscaping(body) { body in
                let transfer = Transfer(url: request.url, head: head, body: body)
                // The closures must not outlive this scope (withoutActuallyEscaping checks).
                defer { transfer.release() }
                return try handle.perform(request, transfer: transfer, configuration: configuration)
            }
        }
    }

    private func checkout() throws(RegistryError) -> EasyHandle {
        if let handle = idle.withLock({ $0.popLast() }) { return handle }
        return try EasyHandle()
    }

    private func checkin(_ handle: EasyHandle) {
        idle.withLock { handles in
            if handles.count < configuration.maxIdleHandles { handles.append(handle) }
        }
    }
}

/// Converts a libcurl result into `RegistryError`, with `curl_easy_strerror`'s text and, when libcurl
/// filled it, the transfer's more specific error buffer. Timeouts (`CURLE_OPERATION_TIMEDOUT`, which
/// covers connect, total and low-speed limits) become `.timeout`; a plain-HTTP answer to a TLS handshake
/// `.plainHTTPServer`; certificate failures `.tls`; everything else `.transport`.
func check(_ code: CURLcode, _ what: @autoclosure () -> String, detail: String? = nil) throws(RegistryError) {
    guard code != CURLE_OK else { return }
    let text = String(cString: curl_easy_strerror(code))
    let reason = detail.flatMap { $0.isEmpty ? nil : $0 } ?? text
    let message = "\(what()): \(reason)"
    if code == CURLE_OPERATION_TIMEDOUT { throw .timeout(message) }
    if code == CURLE_SSL_CONNECT_ERROR && plainHTTPAnswers.contains(where: { reason.contains($0) }) {
        throw .plainHTTPServer(what())
    }
    if certificateFailures.contains(code) { throw .tls(message) }
    throw .transport(message)
}

/// What OpenSSL says when the server's first bytes are an HTTP response, not a TLS record (by OpenSSL version).
private let plainHTTPAnswers = ["wrong version number", "packet length too long", "record layer failure"]

/// Results that name a certificate or key problem: the same on every attempt. A handshake cut short
/// (`CURLE_SSL_CONNECT_ERROR` otherwise) may be a fault of the moment, so it stays `.transport`.
private let certificateFailures: Set<CURLcode> = [
    CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR,
    CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CLIENTCERT,
]
