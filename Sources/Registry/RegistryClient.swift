import Foundation
import OCI
import Synchronization
import TimeBudget

/// A client for one registry's OCI Distribution API (`/v2/`), over any `HTTPTransport`.
///
/// Synchronous and thread-safe: libfuse worker threads call it directly. Every request goes through
/// `perform`, which adds authentication (Basic or Bearer tokens, cached per scope), follows redirects
/// itself (at most `maxRedirects`, dropping `Authorization` when the origin changes, as object-storage
/// redirects for blobs require), and retries transient failures per `RegistryOptions.retry`.
///
/// A call made while a `Deadline` is in effect (`Deadline.current`: a filesystem operation's budget) ends by it:
/// every request, token request and redirect hop is cut to the time left, and a retry (or a `Retry-After`) that
/// does not fit in it is not made: the call fails at once with the last error.
public final class RegistryClient: Sendable {
    /// `host[:port]` as given.
    public let registry: String
    public let options: RegistryOptions
    /// Distribution-spec clients must cope with redirects; five is what curl and Go's net/http allow in spirit.
    public static let maxRedirects = 5
    /// Error documents are read up to this size; the rest is dropped.
    static let maxErrorBody = 64 << 10

    let transport: any HTTPTransport
    let credentials: Credentials?
    let baseURL: URL
    /// Tokens and the registry's auth scheme. Never held across a request: token fetches run unlocked,
    /// so two threads may fetch the same scope at once and the later one wins (both tokens are valid).
    let auth: Mutex<AuthState>

    /// - Parameters:
    ///   - registry: `host[:port]`, without scheme.
    ///   - transport: How requests travel (`CurlTransport` in production, `InMemoryRegistry` in unit tests).
    ///   - credentials: Used for Basic auth and for Bearer token requests; `nil` for anonymous access.
    ///   - options: Scheme, retries, timeouts, size caps.
    /// - Throws: `RegistryError.invalidArgument` for a host that cannot form a URL.
    public init(
        registry: String, transport: any HTTPTransport, credentials: Credentials? = nil,
        options: RegistryOptions = RegistryOptions()
    ) throws(RegistryError) {
        guard !registry.isEmpty, !registry.contains("/"), !registry.contains("@"),
            let url = URL(string: (options.plainHTTP ? "http://" : "https://") + registry), url.host != nil
        else { throw .invalidArgument("registry host '\(registry)'") }
        self.registry = registry
        self.transport = transport
        self.credentials = credentials
        self.options = options
        self.baseURL = url
        self.auth = Mutex(AuthState())
    }

    // MARK: - Requests

    /// One logical registry request; `perform` turns it into one or more HTTP exchanges.
    struct Call {
        var method: HTTPRequest.Method
        var url: URL
        var headers: HTTPHeaders = [:]
        var body: Data? = nil
        /// Token scope (`repository:a/b:pull`); `nil` for `/v2/` itself.
        var scope: String?
        var timeouts: HTTPTimeouts
    }

    func url(_ path: String, query: [URLQueryItem] = []) throws(RegistryError) -> URL {
        var components = URLComponents(url: baseURL, resolvingAgainstBaseURL: false)
        components?.path = path
        if !query.isEmpty { components?.queryItems = query }
        guard let url = components?.url else { throw .invalidArgument("path '\(path)'") }
        return url
    }

    static func scope(_ repository: String, push: Bool = false) -> String {
        "repository:\(repository):" + (push ? "pull,push" : "pull")
    }

    /// Runs `call` to a 2xx response: authenticates, follows redirects, retries transient failures.
    ///
    /// - Parameters:
    ///   - restartable: Whether a transient failure may be retried after body bytes reached `body`
    ///     (true when `head` resets what `body` collected; false for caller-owned streams).
    ///   - head: Called with each 2xx response head before its body; again if the request is retried.
    ///   - body: The 2xx body. Error and redirect bodies never reach it.
    /// - Returns: The final 2xx head.
    /// - Throws: `RegistryError` mapped from the status, or whatever `head`/`body` threw.
    func perform(
        _ call: Call, restartable: Bool = false,
        head: (HTTPResponseHead) throws -> Void = { _ in },
        body: (UnsafeRawBufferPointer) throws -> Void = { _ in }
    ) throws -> HTTPResponseHead {
        let deadline = Deadline.current
        var attempt = 0
        while true {
            var delivered = false
            var retryAfter: Duration?
            do {
                return try attemptOnce(call, retryAfter: &retryAfter, head: head) { chunk in
                    delivered = true
                    try body(chunk)
                }
            } catch let error as RegistryError
                where error.isTransient && attempt + 1 < options.retry.attempts && (restartable || !delivered)
            {
                guard
                    let wait = options.retry.wait(
                        beforeRetry: attempt, retryAfter: retryAfter, remaining: deadline?.remaining)
                else { throw error }
                options.sleep(wait)
                attempt += 1
            }
        }
    }

    /// The request as the transport gets it: limits cut to the deadline in effect, which must not have passed.
    func request(
        _ method: HTTPRequest.Method, _ url: URL, headers: HTTPHeaders, body: Data?, timeouts: HTTPTimeouts
    ) throws(RegistryError) -> HTTPRequest {
        let deadline = Deadline.current
        if let deadline, deadline.hasPassed {
            throw .timeout("\(method.rawValue) \(url.absoluteString): not sent, the operation's time budget is spent")
        }
        return HTTPRequest(
            method: method, url: url, headers: headers, body: body, timeouts: timeouts.bounded(by: deadline))
    }

    private func attemptOnce(
        _ call: Call, retryAfter: inout Duration?,
        head: (HTTPResponseHead) throws -> Void,
        body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponseHead {
        var url = call.url
        var method = call.method
        var requestBody = call.body
        var redirects = 0
        var reauthenticated = false
        let scopeKey = call.scope ?? ""
        while true {
            let registryOrigin = Self.sameOrigin(url, baseURL)
            var headers = call.headers
            headers["User-Agent"] = options.userAgent
            var sentToken: String?
            if registryOrigin {
                // Credentials go only to the registry itself, never to where it redirects us.
                switch try authorization(scope: scopeKey) {
                case .bearer(let token):
                    headers["Authorization"] = "Bearer " + token
                    sentToken = token
                case .basic(let value): headers["Authorization"] = value
                case .none: headers["Authorization"] = nil
                }
            } else {
                headers["Authorization"] = nil
            }
            let request = try self.request(method, url, headers: headers, body: requestBody, timeouts: call.timeouts)

            var success = false
            var received: Int64 = 0
            var errorBody = Data()
            let response = try transport.send(
                request,
                head: { response in
                    success = (200..<300).contains(response.status)
                    if success { try head(response) }
                },
                body: { chunk in
                    if success {
                        received += Int64(chunk.count)
                        try body(chunk)
                    } else if errorBody.count < Self.maxErrorBody {
                        errorBody.append(contentsOf: chunk.prefix(Self.maxErrorBody - errorBody.count))
                    }
                })
            let what = "\(method.rawValue) \(url.absoluteString)"

            if (200..<300).contains(response.status) {
                if method != .head, response.status != 204, let length = response.contentLength, received != length {
                    throw RegistryError.transport("\(what): body truncated after \(received) of \(length) bytes")
                }
                return response
            }
            let diagnostics = RegistryError.Diagnostics(request: what, body: errorBody)
            switch response.status {
            case 301, 302, 303, 307, 308:
                redirects += 1
                guard redirects <= Self.maxRedirects else {
                    throw RegistryError.tooManyRedirects(call.url.absoluteString)
                }
                guard let location = response.headers["Location"],
                    let next = URL(string: location, relativeTo: url)?.absoluteURL,
                    next.scheme == "https" || next.scheme == "http"
                else {
                    throw RegistryError.invalidResponse("\(what): HTTP \(response.status) without a usable Location")
                }
                url = next
                if response.status == 303 {
                    method = method == .head ? .head : .get
                    requestBody = nil
                }
            case 401 where registryOrigin && !reauthenticated:
                // One fresh authentication per attempt: a first challenge, or a cached token that expired
                // or was revoked early. A second 401 means the credentials themselves are refused.
                reauthenticated = true
                let challenge = AuthChallenge.preferred(in: response.headers.values("WWW-Authenticate"))
                try authenticate(challenge: challenge, scope: call.scope, rejected: sentToken, diagnostics: diagnostics)
            case 401, 403:
                throw RegistryError.unauthorized(diagnostics)
            case 404:
                throw RegistryError.notFound(diagnostics)
            default:
                if response.status == 429 || response.status == 503, let value = response.headers["Retry-After"] {
                    retryAfter = RetryPolicy.parseRetryAfter(value, now: options.now())
                }
                throw RegistryError.registry(status: response.status, diagnostics: diagnostics)
            }
        }
    }

    /// Runs `call` and returns the whole 2xx body, refusing more than `limit` bytes.
    func fetch(_ call: Call, limit: Int) throws -> HTTPResponse {
        var data = Data()
        let what = call.url.absoluteString
        let head = try perform(
            call, restartable: true,
            head: { head in
                data = Data()
                if call.method != .head, let length = head.contentLength, length > Int64(limit) {
                    throw RegistryError.tooLarge(url: what, limit: Int64(limit))
                }
            },
            body: { chunk in
                guard data.count + chunk.count <= limit else {
                    throw RegistryError.tooLarge(url: what, limit: Int64(limit))
                }
                data.append(contentsOf: chunk)
            })
        return HTTPResponse(head: head, body: data)
    }

    static func sameOrigin(_ a: URL, _ b: URL) -> Bool {
        a.scheme?.lowercased() == b.scheme?.lowercased() && a.host?.lowercased() == b.host?.lowercased()
            && (a.port ?? defaultPort(a)) == (b.port ?? defaultPort(b))
    }

    private static func defaultPort(_ url: URL) -> Int { url.scheme?.lowercased() == "http" ? 80 : 443 }

    // MARK: - Argument checks

    /// Repository names go into URL paths: only the distribution grammar's characters, no `..` games.
    static func checkRepository(_ repository: String) throws(RegistryError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789._-/")
        guard !repository.isEmpty, repository.count <= 255, repository.allSatisfy(allowed.contains),
            !repository.split(separator: "/", omittingEmptySubsequences: false).contains(where: {
                $0.isEmpty || $0.allSatisfy { $0 == "." }
            })
        else { throw .invalidArgument("repository name '\(repository)'") }
    }

    enum Reference {
        case tag(String)
        case digest(Digest)

        var path: String {
            switch self {
            case .tag(let tag): return tag
            case .digest(let digest): return digest.description
            }
        }
    }

    static func parseReference(_ reference: String) throws(RegistryError) -> Reference {
        if reference.contains(":") {
            do { return .digest(try Digest(parsing: reference)) } catch {
                throw .invalidArgument("\(error)")
            }
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
        guard let first = reference.first, first != ".", first != "-", reference.count <= 128,
            reference.allSatisfy(allowed.contains)
        else { throw .invalidArgument("tag '\(reference)'") }
        return .tag(reference)
    }
}
