import ContentHash
import CurlTransport
import Foundation
import OCI
import TestSupport
import Testing
import TimeBudget

@testable import Registry

/// A call made under a `Deadline` ends by it, whatever the registry says: `Retry-After`, backoff, slow token
/// servers and stalled bodies included.
@Suite struct DeadlineTests {
    private static let manifest = Data(
        #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#
            .utf8)

    private static func ok() -> InMemoryRegistry.Reply {
        .init(200, headers: ["Content-Type": MediaType.ociManifest], body: manifest)
    }

    private static func throttled(_ retryAfter: String?) -> InMemoryRegistry.Reply {
        var headers: HTTPHeaders = [:]
        if let retryAfter { headers["Retry-After"] = retryAfter }
        return .init(429, headers: headers, json: #"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#)
    }

    private func client(_ transport: InMemoryRegistry, _ sleeper: SleepRecorder, attempts: Int = 4) throws
        -> RegistryClient
    {
        try RegistryClient(
            registry: "registry.example", transport: transport,
            options: RegistryOptions(retry: RetryPolicy(attempts: attempts), sleep: { sleeper.sleep($0) }))
    }

    @Test func aRetryAfterBeyondTheBudgetFailsAtOnce() throws {
        let transport = InMemoryRegistry { _, _ in Self.throttled("1000") }
        let sleeper = SleepRecorder()
        let registry = try client(transport, sleeper)
        #expect {
            try Deadline.bind(.after(.seconds(5))) {
                try registry.getManifest(repository: "org/cache", reference: "v1")
            }
        } throws: { error in
            if case RegistryError.registry(429, _) = error { return true }
            return false
        }
        #expect(sleeper.recorded.isEmpty, "waited although the server's delay cannot fit")
        #expect(transport.requests.count == 1)
    }

    @Test func aRetryAfterLongerThanThePolicyAllowsFailsAtOnceWithoutADeadline() throws {
        let transport = InMemoryRegistry { _, seen in seen == 0 ? Self.throttled("600") : Self.ok() }
        let sleeper = SleepRecorder()
        #expect(throws: RegistryError.self) {
            try client(transport, sleeper).getManifest(repository: "org/cache", reference: "v1")
        }
        #expect(sleeper.recorded.isEmpty)
    }

    @Test func aRetryAfterThatFitsIsHonoured() throws {
        let transport = InMemoryRegistry { _, seen in seen == 0 ? Self.throttled("1") : Self.ok() }
        let sleeper = SleepRecorder()
        let registry = try client(transport, sleeper)
        let fetched = try Deadline.bind(.after(.seconds(10))) {
            try registry.getManifest(repository: "org/cache", reference: "v1")
        }
        #expect(fetched.data == Self.manifest)
        #expect(sleeper.recorded == [.seconds(1)])
    }

    @Test func backoffStopsWhereTheBudgetEnds() throws {
        let transport = InMemoryRegistry { _, _ in .init(503, json: #"{"errors":[{"code":"UNAVAILABLE"}]}"#) }
        let sleeper = SleepRecorder()
        let registry = try client(transport, sleeper, attempts: 10)
        #expect(throws: RegistryError.self) {
            try Deadline.bind(.after(.milliseconds(1200))) {
                try registry.getManifest(repository: "org/cache", reference: "v1")
            }
        }
        // 200 + 400 + 800 ms fit in 1.2 s (the recorder does not sleep); the next, 1.6 s, does not.
        #expect(sleeper.recorded == [.milliseconds(200), .milliseconds(400), .milliseconds(800)])
        #expect(transport.requests.count == 4)
    }

    @Test func everyRequestOfTheCallIsCutToTheTimeLeftTokenRequestsIncluded() throws {
        let challenge = #"Bearer realm="https://auth.example/token",service="registry.example""#
        let transport = InMemoryRegistry { request, _ in
            if request.url.host == "auth.example" { return .init(200, json: #"{"token":"t","expires_in":300}"#) }
            guard request.headers["Authorization"] == "Bearer t" else {
                return .init(401, headers: ["WWW-Authenticate": challenge], json: #"{"errors":[]}"#)
            }
            return Self.ok()
        }
        let registry = try client(transport, SleepRecorder())
        _ = try Deadline.bind(.after(.seconds(3))) {
            try registry.getManifest(repository: "org/cache", reference: "v1")
        }
        #expect(transport.requests.count == 3)
        for request in transport.requests {
            #expect(request.timeouts.total.map { $0 <= .seconds(3) } == true, "\(request.url)")
            #expect(request.timeouts.connect <= .seconds(3), "\(request.url)")
        }
        #expect(transport.requests(toHost: "auth.example").count == 1)
    }

    @Test func nothingIsSentOnceTheBudgetIsSpent() throws {
        let transport = InMemoryRegistry { _, _ in Self.ok() }
        let registry = try client(transport, SleepRecorder())
        #expect {
            try Deadline.bind(Deadline(.now - .seconds(1))) {
                try registry.getManifest(repository: "org/cache", reference: "v1")
            }
        } throws: { error in
            if case RegistryError.timeout(let text) = error { return text.contains("budget") }
            return false
        }
        #expect(transport.requests.isEmpty)
    }

    @Test func withoutADeadlineTimeoutsAreTheConfiguredOnes() throws {
        let transport = InMemoryRegistry { _, _ in Self.ok() }
        _ = try client(transport, SleepRecorder()).getManifest(repository: "org/cache", reference: "v1")
        #expect(transport.requests.first?.timeouts == HTTPTimeouts())
    }
}

/// The same limits, over libcurl against a local server that stalls or drips.
@Suite struct CurlDeadlineTests {
    private static let timeouts = HTTPTimeouts(connect: .seconds(10), total: nil, stall: .seconds(30))

    @Test func aStalledBodyEndsAtTheDeadline() throws {
        let server = try TestHTTPServer { _ in nil }
        defer { server.stop() }
        let client = try RegistryClient(
            registry: "127.0.0.1:\(server.port)", transport: CurlTransport(),
            options: RegistryOptions(plainHTTP: true, retry: RetryPolicy(attempts: 3), timeouts: Self.timeouts))
        let start = ContinuousClock.now
        #expect(throws: RegistryError.self) {
            try Deadline.bind(.after(.seconds(1))) {
                try client.getBlob(repository: "org/cache", digest: SHA256Hasher.digest(Data())) { _ in }
            }
        }
        // A hang guard with slack for a loaded machine; the stall limit alone would allow 30 s per attempt.
        #expect(ContinuousClock.now - start < .seconds(8))
    }

    @Test func aOneBytePerSecondDripCountsAsAStall() throws {
        let body = Data(repeating: 0x41, count: 64)
        let server = try TestHTTPServer { _ in .init(status: 200, body: body, drip: .seconds(1)) }
        defer { server.stop() }
        var request = HTTPRequest(
            url: URL(string: server.baseURL + "/drip")!,
            timeouts: HTTPTimeouts(connect: .seconds(2), total: nil, stall: .seconds(2)))
        request.headers["X-Test"] = "drip"
        let start = ContinuousClock.now
        #expect {
            try CurlTransport().send(request, maxBodySize: 1024)
        } throws: { error in
            if case RegistryError.timeout = error { return true }
            return false
        }
        let elapsed = ContinuousClock.now - start
        // 64 bytes at 1 byte/s would take a minute; below 1 KiB/s for the 2 s stall limit fails it.
        #expect(elapsed >= .seconds(1.5) && elapsed < .seconds(15), "took \(elapsed)")
    }
}
