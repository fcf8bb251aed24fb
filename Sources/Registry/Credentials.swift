import Foundation

/// A username and password (or token) for one registry.
public struct Credentials: Sendable, Equatable, CustomStringConvertible {
    public var username: String
    public var password: String
    /// An OAuth2 refresh token (`identitytoken` in auth files; a helper's `Username` of `<token>`).
    /// When set, Bearer tokens are requested with `POST realm` (`grant_type=refresh_token`) instead of Basic.
    public var identityToken: String?

    public init(username: String, password: String, identityToken: String? = nil) {
        self.username = username
        self.password = password
        self.identityToken = identityToken
    }

    /// Credentials that are only a refresh token.
    public init(identityToken: String) {
        self.init(username: "", password: "", identityToken: identityToken)
    }

    /// Parses `user:pass` as `--creds` takes it; the password may contain `:`.
    public init(parsing text: String) throws(RegistryError) {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
            throw .credentials("expected USER:PASSWORD")
        }
        self.init(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
    }

    /// The `Authorization: Basic` value.
    public var basicAuthorization: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }

    /// Never prints the password.
    public var description: String { identityToken != nil ? "identity token" : "\(username):***" }
}
