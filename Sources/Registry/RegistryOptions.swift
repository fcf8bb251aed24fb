import Foundation

/// How a `RegistryClient` talks to its registry.
public struct RegistryOptions: Sendable {
    /// Use `http://` instead of `https://` (a local test registry).
    public var plainHTTP: Bool
    public var retry: RetryPolicy
    /// Limits for requests whose body is held in memory (pings, manifests, tags, configs, tokens).
    public var timeouts: HTTPTimeouts
    /// Limits for streamed blob downloads and uploads: same connect and stall limits, no total.
    public var streamingTimeouts: HTTPTimeouts
    /// Largest manifest accepted (the distribution spec lets registries refuse above 4 MiB).
    public var maxManifestSize: Int
    /// Largest blob `getBlob(repository:digest:)` will hold in memory.
    public var maxSmallBlobSize: Int
    /// Sent as `User-Agent`.
    public var userAgent: String
    /// The clock token lifetimes are measured on; tests substitute their own.
    public var now: @Sendable () -> Date
    /// How the client waits between retries; tests substitute one that records instead of sleeping.
    public var sleep: @Sendable (Duration) -> Void

    public init(
        plainHTTP: Bool = false, retry: RetryPolicy = RetryPolicy(), timeouts: HTTPTimeouts = HTTPTimeouts(),
        streamingTimeouts: HTTPTimeouts? = nil, maxManifestSize: Int = 4 << 20, maxSmallBlobSize: Int = 16 << 20,
        userAgent: String = "mcvfs/0.1",
        now: @escaping @Sendable () -> Date = { Date() },
        sleep: @escaping @Sendable (Duration) -> Void = {
            Thread.sleep(forTimeInterval: Double($0.roundedUpMilliseconds) / 1000)
        }
    ) {
        self.plainHTTP = plainHTTP
        self.retry = retry
        self.timeouts = timeouts
        var streaming = streamingTimeouts ?? timeouts
        if streamingTimeouts == nil { streaming.total = nil }
        self.streamingTimeouts = streaming
        self.maxManifestSize = maxManifestSize
        self.maxSmallBlobSize = maxSmallBlobSize
        self.userAgent = userAgent
        self.now = now
        self.sleep = sleep
    }
}

/// Retries for transient failures (`RegistryError.isTransient`): exponential backoff, and the server's
/// `Retry-After` on 429 and 503 when it sends one. No wait is ever longer than what the operation has left.
public struct RetryPolicy: Sendable, Equatable {
    /// Total tries, the first included; 1 disables retries.
    public var attempts: Int
    /// Wait before retry n (0-based) is `baseDelay · 2ⁿ`, at most `maxDelay`.
    public var baseDelay: Duration
    public var maxDelay: Duration
    /// A `Retry-After` longer than this fails the request at once rather than parking the caller (a FUSE thread,
    /// a layer download) on a hostile or overloaded registry: the caller's own retry, later, costs nothing.
    public var maxRetryAfter: Duration

    public init(
        attempts: Int = 4, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(5),
        maxRetryAfter: Duration = .seconds(30)
    ) {
        self.attempts = max(1, attempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxRetryAfter = maxRetryAfter
    }

    /// No retries: for callers that retry at a higher level.
    public static let none = RetryPolicy(attempts: 1)

    /// The backoff before retry `retry` (0 for the first retry).
    public func delay(beforeRetry retry: Int) -> Duration {
        var delay = baseDelay
        for _ in 0..<min(retry, 30) where delay < maxDelay { delay *= 2 }
        return min(delay, maxDelay)
    }

    /// How long to wait before retry `retry`, or nil when it must not be made: the server's `Retry-After` is
    /// honoured only up to `maxRetryAfter`, and no wait is made that does not end before `remaining` (what is
    /// left of the operation's deadline; nil when it has none) runs out.
    public func wait(beforeRetry retry: Int, retryAfter: Duration? = nil, remaining: Duration? = nil) -> Duration? {
        if let retryAfter, retryAfter > maxRetryAfter { return nil }
        let wait = retryAfter ?? delay(beforeRetry: retry)
        if let remaining, wait >= remaining { return nil }
        return wait
    }

    /// Parses `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
    public static func parseRetryAfter(_ value: String, now: Date) -> Duration? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(trimmed) { return .seconds(max(0, seconds)) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: trimmed) else { return nil }
        return .milliseconds(max(0, Int64(date.timeIntervalSince(now) * 1000)))
    }
}
