import Foundation
import OCI

/// What the client knows about authenticating to its registry. A plain value: the client keeps it in a
/// `Mutex` and never holds that lock across network I/O.
struct AuthState: Sendable {
    struct Token: Sendable, Equatable {
        var value: String
        /// When to stop using it: a little before the server's expiry, so a request in flight does not
        /// carry a token that expires on the way.
        var refreshAt: Date
    }

    /// Bearer tokens by scope (`repository:a:pull`; `""` for registry-wide). The client is per registry,
    /// so this is the per-(registry, scope) cache.
    var tokens: [String: Token] = [:]
    /// The registry's last Bearer challenge: lets a new scope fetch its token before its first request
    /// instead of after a 401.
    var bearer: AuthChallenge?
    /// The registry asked for Basic; send credentials up front from now on.
    var basic = false

    enum Authorization: Equatable {
        case none
        case bearer(String)
        case basic(String)
    }

    /// A token still good at `now`, dropping it when it is not.
    mutating func token(scope: String, now: Date) -> String? {
        guard let token = tokens[scope] else { return nil }
        guard token.refreshAt > now else {
            tokens[scope] = nil
            return nil
        }
        return token.value
    }

    /// Forgets `value` for `scope` unless another thread already replaced it.
    mutating func discard(scope: String, value: String) {
        if tokens[scope]?.value == value { tokens[scope] = nil }
    }

    mutating func store(_ value: String, scope: String, lifetime: TimeInterval, now: Date) {
        // Refresh 10% early, by at most 30 s.
        let margin = min(30, lifetime * 0.1)
        tokens[scope] = Token(value: value, refreshAt: now.addingTimeInterval(lifetime - margin))
    }
}

extension RegistryClient {
    /// The `Authorization` to send for `scope` now, fetching a token first when the registry is known
    /// to use Bearer auth and none is cached.
    func authorization(scope: String) throws -> AuthState.Authorization {
        let now = options.now()
        let (cached, challenge, basic) = auth.withLock { state in
            (state.token(scope: scope, now: now), state.bearer, state.basic)
        }
        if let cached { return .bearer(cached) }
        if let challenge {
            return .bearer(try fetchToken(challenge: challenge, scope: scope.isEmpty ? nil : scope))
        }
        if basic, let credentials, credentials.identityToken == nil { return .basic(credentials.basicAuthorization) }
        return .none
    }

    /// Answers a 401: remembers the scheme and, for Bearer, fetches a fresh token for `scope`.
    func authenticate(
        challenge: AuthChallenge?, scope: String?, rejected: String?, diagnostics: RegistryError.Diagnostics
    )
        throws
    {
        let key = scope ?? ""
        if let rejected { auth.withLock { $0.discard(scope: key, value: rejected) } }
        guard let challenge else { throw RegistryError.unauthorized(diagnostics) }
        if challenge.isBearer {
            auth.withLock { $0.bearer = challenge }
            _ = try fetchToken(challenge: challenge, scope: scope)
        } else if challenge.isBasic {
            guard let credentials, credentials.identityToken == nil else {
                throw RegistryError.unauthorized(diagnostics)
            }
            auth.withLock { $0.basic = true }
        } else {
            throw RegistryError.authentication("\(diagnostics.request): unsupported scheme '\(challenge.scheme)'")
        }
    }

    /// Token flow of the distribution spec (auth/token.md): `GET realm?service=S&scope=...`, with Basic
    /// credentials when we have them, anonymous otherwise; `POST realm` with a refresh token when the
    /// credentials are an identity token (auth/oauth.md). Caches and returns the token.
    @discardableResult
    func fetchToken(challenge: AuthChallenge, scope: String?) throws -> String {
        guard let realm = challenge.realm, var components = URLComponents(string: realm),
            components.scheme == "https" || components.scheme == "http", components.host != nil
        else {
            throw RegistryError.authentication("\(registry): Bearer challenge without a usable realm: \(challenge)")
        }
        // Our scope, plus the one the registry named when different (it may want more than we knew to ask).
        var scopes = scope.map { [$0] } ?? []
        for named in (challenge.scope ?? "").split(separator: " ").map(String.init) where !scopes.contains(named) {
            scopes.append(named)
        }
        var headers: HTTPHeaders = ["User-Agent": options.userAgent]
        let request: HTTPRequest
        if let refreshToken = credentials?.identityToken {
            // OAuth2 refresh-token grant (distribution spec auth/oauth.md): POST a form, scopes space-separated.
            guard let url = components.url else { throw RegistryError.authentication("realm '\(realm)' is not a URL") }
            var form = URLComponents()
            form.queryItems = [
                URLQueryItem(name: "grant_type", value: "refresh_token"),
                URLQueryItem(name: "refresh_token", value: refreshToken),
                URLQueryItem(name: "client_id", value: "mcvfs"),
            ]
            if let service = challenge.service {
                form.queryItems?.append(URLQueryItem(name: "service", value: service))
            }
            if !scopes.isEmpty {
                form.queryItems?.append(URLQueryItem(name: "scope", value: scopes.joined(separator: " ")))
            }
            // URLComponents leaves '+' alone, which a form decoder reads as a space.
            let body = (form.percentEncodedQuery ?? "").replacingOccurrences(of: "+", with: "%2B")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = try self.request(.post, url, headers: headers, body: Data(body.utf8), timeouts: options.timeouts)
        } else {
            var query = components.queryItems ?? []
            if let service = challenge.service { query.append(URLQueryItem(name: "service", value: service)) }
            query += scopes.map { URLQueryItem(name: "scope", value: $0) }
            if !query.isEmpty { components.queryItems = query }
            guard let url = components.url else { throw RegistryError.authentication("realm '\(realm)' is not a URL") }
            if let credentials { headers["Authorization"] = credentials.basicAuthorization }
            request = try self.request(.get, url, headers: headers, body: nil, timeouts: options.timeouts)
        }
        let response = try transport.send(request, maxBodySize: 1 << 20)
        let what = "\(request.method.rawValue) \(request.url.absoluteString)"
        switch response.status {
        case 200: break
        case 401, 403:
            throw RegistryError.unauthorized(RegistryError.Diagnostics(request: what, body: response.body))
        default:
            throw RegistryError.registry(
                status: response.status, diagnostics: RegistryError.Diagnostics(request: what, body: response.body))
        }
        struct TokenResponse: Decodable {
            var token: String?
            var accessToken: String?
            var expiresIn: Int?
            enum CodingKeys: String, CodingKey {
                case token
                case accessToken = "access_token"
                case expiresIn = "expires_in"
            }
        }
        guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: response.body),
            let token = [decoded.token, decoded.accessToken].compactMap({ $0 }).first(where: { !$0.isEmpty })
        else { throw RegistryError.authentication("\(what) answered without a token") }
        // The spec's default lifetime is 60 s and servers should not issue less; treat shorter as 60 like
        // docker does. `issued_at` is ignored on purpose: lifetimes are measured on our clock, so a
        // registry with a skewed clock cannot make every token look expired on arrival.
        let lifetime = TimeInterval(max(decoded.expiresIn ?? 60, 60))
        let now = options.now()
        auth.withLock { $0.store(token, scope: scope ?? "", lifetime: lifetime, now: now) }
        return token
    }
}
