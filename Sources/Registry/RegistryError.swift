import ContentHash
import Foundation
import OCI

/// Everything `RegistryClient` and its transports throw. Each case carries the evidence a person
/// needs to act (the request, the registry's own words, the digests) in a one-line description.
public enum RegistryError: Error, Equatable, CustomStringConvertible {
    /// Bytes that do not hash to their address: an attack or a fault, never data.
    case digestMismatch(expected: Digest, actual: Digest, size: Int64)
    /// The registry refused the request; `diagnostics` holds its error document.
    case registry(status: Int, diagnostics: Diagnostics)
    /// 401 after authentication was attempted, or 403.
    case unauthorized(Diagnostics)
    /// 404: no such repository, manifest, blob or tag.
    case notFound(Diagnostics)
    /// A body larger than mcvfs will hold for this kind of document.
    case tooLarge(url: String, limit: Int64)
    /// No progress within the configured connect, stall or total limit.
    case timeout(String)
    /// The connection failed (DNS, TCP, reset, truncated transfer).
    case transport(String)
    /// TLS failed for a reason that trying again will not change: a certificate not trusted, a name that does not
    /// match, a client certificate refused.
    case tls(String)
    /// An HTTPS request answered in plain HTTP: the registry serves HTTP only (`what` is the request).
    case plainHTTPServer(String)
    /// The registry answered something the protocol does not allow (bad header, wrong status, bad JSON).
    case invalidResponse(String)
    /// More than `RegistryClient.maxRedirects` redirects.
    case tooManyRedirects(String)
    /// A token server refused us or answered without a token.
    case authentication(String)
    /// An auth file or credential helper could not be read.
    case credentials(String)
    /// A repository name or reference that must not be put in a URL.
    case invalidArgument(String)

    /// Whether the registry is out, so that trying again later may succeed: connection failures, timeouts, 429
    /// and 5xx. The one classification of an outage: retries use it, and so do the fallbacks to what a node
    /// recorded (catalogs, signatures). A mistake (TLS or scheme, 401, 403, 404) is not an outage: it fails.
    public var isTransient: Bool {
        switch self {
        case .timeout, .transport: return true
        case .registry(let status, _): return status == 429 || (500...599).contains(status)
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .digestMismatch(let expected, let actual, let size):
            return "digest mismatch: expected \(expected), got \(actual) over \(size) bytes"
        case .registry(let status, let diagnostics):
            return "registry answered HTTP \(status) to \(diagnostics)"
        case .unauthorized(let diagnostics): return "not authorized: \(diagnostics)"
        case .notFound(let diagnostics): return "not found: \(diagnostics)"
        case .tooLarge(let url, let limit): return "response from \(url) exceeds the \(limit)-byte limit"
        case .timeout(let what): return "timed out: \(what)"
        case .transport(let what): return "connection failed: \(what)"
        case .tls(let what): return "TLS failed: \(what)"
        case .plainHTTPServer(let what):
            return "server gave HTTP response to HTTPS client (\(what)); add --plain-http if the registry serves HTTP"
        case .invalidResponse(let what): return "invalid registry response: \(what)"
        case .tooManyRedirects(let url): return "too many redirects starting at \(url)"
        case .authentication(let what): return "authentication failed: \(what)"
        case .credentials(let what): return "cannot read credentials: \(what)"
        case .invalidArgument(let what): return "invalid argument: \(what)"
        }
    }

    /// The request and what the registry said about it: its distribution-spec error document
    /// (`{"errors":[{"code","message","detail"}]}`), or the start of a body that was not one.
    public struct Diagnostics: Sendable, Equatable, CustomStringConvertible {
        /// `METHOD URL` of the request that failed.
        public var request: String
        public var errors: [Entry]
        /// The first bytes of a body that was not an error document, for the log.
        public var body: String?

        public struct Entry: Sendable, Equatable, Decodable {
            /// `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `UNAUTHORIZED`, `DENIED`, `TOOMANYREQUESTS`, ...
            public var code: String
            public var message: String?

            public init(code: String, message: String? = nil) {
                self.code = code
                self.message = message
            }
        }

        public init(request: String, errors: [Entry] = [], body: String? = nil) {
            self.request = request
            self.errors = errors
            self.body = body
        }

        /// Decodes an error body; anything that is not an error document is kept as text (first 200 bytes).
        public init(request: String, body data: Data) {
            struct Document: Decodable { var errors: [Entry]? }
            self.request = request
            if let document = try? JSONDecoder().decode(Document.self, from: data), let errors = document.errors {
                self.errors = errors
                self.body = nil
            } else {
                self.errors = []
                let text = String(decoding: data.prefix(200), as: UTF8.self)
                    .replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
                self.body = text.isEmpty ? nil : text
            }
        }

        public var codes: [String] { errors.map(\.code) }

        public var description: String {
            var text = request
            if !errors.isEmpty {
                text +=
                    ": " + errors.map { e in e.message.map { "\(e.code) (\($0))" } ?? e.code }.joined(separator: "; ")
            } else if let body {
                text += ": \(body)"
            }
            return text
        }
    }
}

extension RegistryError {
    init(_ mismatch: DigestMismatch) {
        self = .digestMismatch(expected: mismatch.expected, actual: mismatch.actual, size: mismatch.size)
    }
}
