import ContentHash
import Foundation
import OCI
import Synchronization
import TestSupport
import Testing

@testable import Registry

/// A small OCI manifest and its digest, as a registry would serve them.
private let manifestJSON = """
    {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
    "config":{"mediaType":"application/vnd.oci.image.config.v1+json",\
    "digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},\
    "layers":[]}
    """
private let manifestData = Data(manifestJSON.utf8)
private let manifestDigest = SHA256Hasher.digest(manifestData)

private func manifestReply(digestHeader: Digest? = manifestDigest) -> InMemoryRegistry.Reply {
    var headers: HTTPHeaders = ["Content-Type": MediaType.ociManifest]
    if let digestHeader { headers["Docker-Content-Digest"] = digestHeader.description }
    return InMemoryRegistry.Reply(200, headers: headers, body: manifestData)
}

private let bearerChallenge =
    #"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:org/cache:pull""#

private func client(
    _ transport: InMemoryRegistry, credentials: Credentials? = nil, clock: TestClock = TestClock(),
    sleeper: SleepRecorder = SleepRecorder()
) throws -> RegistryClient {
    try RegistryClient(
        registry: "registry.example", transport: transport, credentials: credentials,
        options: RegistryOptions(now: { clock.now }, sleep: { sleeper.sleep($0) }))
}

/// A registry that wants a Bearer token `valid` (anything else is refused) and serves the manifest.
private func tokenRegistry(tokens: @escaping @Sendable (Int) -> String, valid: @escaping @Sendable (String) -> Bool)
    -> InMemoryRegistry
{
    InMemoryRegistry { request, seen in
        if request.url.host == "auth.example" {
            return .init(200, json: #"{"token":"\#(tokens(seen))","expires_in":300}"#)
        }
        guard let auth = request.headers["Authorization"], auth.hasPrefix("Bearer "), valid(String(auth.dropFirst(7)))
        else {
            return .init(
                401, headers: ["WWW-Authenticate": bearerChallenge], json: #"{"errors":[{"code":"UNAUTHORIZED"}]}"#)
        }
        return manifestReply()
    }
}

@Suite struct RegistryClientAuthTests {
    @Test func unauthorizedThenTokenThenSuccess() throws {
        let transport = tokenRegistry(tokens: { "tok\($0)" }, valid: { $0 == "tok0" })
        let fetched = try client(transport).getManifest(repository: "org/cache", reference: "v1")

        #expect(fetched.digest == manifestDigest)
        #expect(fetched.mediaType == MediaType.ociManifest)
        #expect(fetched.data == manifestData)
        guard case .manifest(let manifest) = fetched.document else {
            Issue.record("expected a manifest")
            return
        }
        #expect(manifest.layers.isEmpty)

        let requests = transport.requests
        #expect(requests.count == 3)
        #expect(requests[0].headers["Authorization"] == nil)
        #expect(requests[0].headers["Accept"]?.contains(MediaType.ociIndex) == true)
        let tokenURL = try #require(URLComponents(url: requests[1].url, resolvingAgainstBaseURL: false))
        #expect(tokenURL.host == "auth.example")
        #expect(tokenURL.queryItems?.contains(URLQueryItem(name: "service", value: "registry.example")) == true)
        #expect(tokenURL.queryItems?.contains(URLQueryItem(name: "scope", value: "repository:org/cache:pull")) == true)
        #expect(requests[1].headers["Authorization"] == nil, "anonymous token request without credentials")
        #expect(requests[2].headers["Authorization"] == "Bearer tok0")
        #expect(requests[2].url.absoluteString == "https://registry.example/v2/org/cache/manifests/v1")
    }

    @Test func tokenRequestCarriesBasicCredentials() throws {
        let transport = tokenRegistry(tokens: { _ in "t" }, valid: { $0 == "t" })
        let credentials = Credentials(username: "alice", password: "s3cret:x")
        _ = try client(transport, credentials: credentials).getManifest(repository: "org/cache", reference: "v1")
        let tokenRequest = try #require(transport.requests(toHost: "auth.example").first)
        #expect(tokenRequest.headers["Authorization"] == "Basic " + Data("alice:s3cret:x".utf8).base64EncodedString())
    }

    @Test func identityTokenUsesRefreshGrant() throws {
        let transport = InMemoryRegistry { request, _ in
            if request.url.host == "auth.example" {
                guard request.method == .post else { return .init(405) }
                return .init(200, json: #"{"access_token":"fresh","expires_in":600}"#)
            }
            guard request.headers["Authorization"] == "Bearer fresh" else {
                return .init(401, headers: ["WWW-Authenticate": bearerChallenge])
            }
            return manifestReply()
        }
        let registry = try client(transport, credentials: Credentials(identityToken: "refresh+me/="))
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        let tokenRequest = try #require(transport.requests(toHost: "auth.example").first)
        #expect(tokenRequest.headers["Authorization"] == nil)
        #expect(tokenRequest.headers["Content-Type"] == "application/x-www-form-urlencoded")
        var form = URLComponents()
        form.percentEncodedQuery = String(decoding: tokenRequest.body ?? Data(), as: UTF8.self)
        let fields = Dictionary(uniqueKeysWithValues: (form.queryItems ?? []).map { ($0.name, $0.value ?? "") })
        #expect(
            fields == [
                "grant_type": "refresh_token", "refresh_token": "refresh+me/=", "client_id": "mcvfs",
                "service": "registry.example", "scope": "repository:org/cache:pull",
            ])
    }

    @Test func cachedTokenIsReused() throws {
        let transport = tokenRegistry(tokens: { "tok\($0)" }, valid: { $0 == "tok0" })
        let registry = try client(transport)
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        _ = try registry.headManifest(repository: "org/cache", reference: "v1")
        #expect(transport.requests(toHost: "auth.example").count == 1)
        #expect(transport.requests(toHost: "registry.example").count == 4)  // one 401, then three served
    }

    @Test func expiredTokenIsRefreshedBeforeUse() throws {
        let clock = TestClock()
        let transport = tokenRegistry(tokens: { "tok\($0)" }, valid: { $0.hasPrefix("tok") })
        let registry = try client(transport, clock: clock)
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        clock.advance(301)
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        let registryRequests = transport.requests(toHost: "registry.example")
        #expect(transport.requests(toHost: "auth.example").count == 2)
        #expect(registryRequests.count == 3, "the known challenge lets the client fetch the new token without a 401")
        #expect(registryRequests.last?.headers["Authorization"] == "Bearer tok1")
    }

    @Test func rejectedTokenIsRefreshedOnce() throws {
        // The registry revokes tok0 after its first use; the client must drop it and fetch tok1.
        let transport = InMemoryRegistry { request, seen in
            if request.url.host == "auth.example" { return .init(200, json: #"{"access_token":"tok\#(seen)"}"#) }
            let auth = request.headers["Authorization"]
            if (seen == 1 && auth == "Bearer tok0") || auth == "Bearer tok1" { return manifestReply() }
            return .init(401, headers: ["WWW-Authenticate": bearerChallenge + #",error="invalid_token""#])
        }
        let registry = try client(transport)
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        #expect(transport.requests(toHost: "auth.example").count == 2)
        #expect(transport.requests.last?.headers["Authorization"] == "Bearer tok1")
    }

    @Test func refusedTokenFailsAfterOneRefresh() throws {
        let transport = tokenRegistry(tokens: { "tok\($0)" }, valid: { _ in false })
        let registry = try client(transport)
        #expect {
            try registry.getManifest(repository: "org/cache", reference: "v1")
        } throws: { error in
            guard case RegistryError.unauthorized(let diagnostics) = error else { return false }
            return diagnostics.codes == ["UNAUTHORIZED"] && diagnostics.request.contains("/v2/org/cache/manifests/v1")
        }
        #expect(transport.requests(toHost: "auth.example").count == 1)
        #expect(transport.requests(toHost: "registry.example").count == 2)
    }

    @Test func basicAuth() throws {
        let credentials = Credentials(username: "bob", password: "pw")
        let transport = InMemoryRegistry { request, _ in
            guard request.headers["Authorization"] == credentials.basicAuthorization else {
                return .init(401, headers: ["WWW-Authenticate": #"Basic realm="Registry Realm""#])
            }
            return manifestReply()
        }
        let registry = try client(transport, credentials: credentials)
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        let sent = transport.requests.map { $0.headers["Authorization"] }
        #expect(sent == [nil, credentials.basicAuthorization, credentials.basicAuthorization])
    }

    @Test func basicChallengeWithoutCredentialsIsUnauthorized() throws {
        let transport = InMemoryRegistry { _, _ in .init(401, headers: ["WWW-Authenticate": #"Basic realm="r""#]) }
        #expect(throws: RegistryError.self) { try client(transport).ping() }
        #expect(transport.requests.count == 1)
    }

    @Test func pingFetchesRegistryWideToken() throws {
        let transport = InMemoryRegistry { request, _ in
            if request.url.host == "auth.example" { return .init(200, json: #"{"token":"t"}"#) }
            if request.headers["Authorization"] == "Bearer t" { return .init(200, json: "{}") }
            return .init(401, headers: ["WWW-Authenticate": #"Bearer realm="https://auth.example/token",service="s""#])
        }
        try client(transport).ping()
        let tokenURL = try #require(transport.requests(toHost: "auth.example").first?.url)
        #expect(
            URLComponents(url: tokenURL, resolvingAgainstBaseURL: false)?.queryItems == [
                URLQueryItem(name: "service", value: "s")
            ])
    }
}

@Suite struct RegistryClientRedirectTests {
    private static let blob = Data(repeating: "triton-kernel ", count: 5000)
    private static let blobDigest = SHA256Hasher.digest(blob)

    @Test func crossHostRedirectDropsAuthorization() throws {
        let credentials = Credentials(username: "u", password: "p")
        let transport = InMemoryRegistry { request, _ in
            if request.url.host == "storage.example" { return .init(200, body: Self.blob) }
            guard request.headers["Authorization"] != nil else {
                return .init(401, headers: ["WWW-Authenticate": #"Basic realm="r""#])
            }
            return .init(307, headers: ["Location": "https://storage.example/bucket/blob?X-Amz-Signature=abc"])
        }
        var received = Data()
        let size = try client(transport, credentials: credentials).getBlob(
            repository: "org/cache", digest: Self.blobDigest
        ) { received.append(contentsOf: $0) }
        #expect(size == Int64(Self.blob.count))
        #expect(received == Self.blob)
        let storage = try #require(transport.requests(toHost: "storage.example").first)
        #expect(storage.headers["Authorization"] == nil)
        #expect(storage.url.query == "X-Amz-Signature=abc")
    }

    @Test func sameHostRedirectKeepsAuthorization() throws {
        let credentials = Credentials(username: "u", password: "p")
        let transport = InMemoryRegistry { request, _ in
            guard request.headers["Authorization"] != nil else {
                return .init(401, headers: ["WWW-Authenticate": #"Basic realm="r""#])
            }
            if request.url.path.hasPrefix("/v2/org/cache/blobs/") {
                return .init(302, headers: ["Location": "/blobdata/1"])
            }
            return .init(200, body: Self.blob)
        }
        let data = try client(transport, credentials: credentials).getBlob(
            repository: "org/cache", digest: Self.blobDigest)
        #expect(data == Self.blob)
        let last = try #require(transport.requests.last)
        #expect(last.url.absoluteString == "https://registry.example/blobdata/1")
        #expect(last.headers["Authorization"] == credentials.basicAuthorization)
    }

    @Test func redirectLoopStops() throws {
        let transport = InMemoryRegistry { _, seen in .init(302, headers: ["Location": "/v2/loop/\(seen)"]) }
        #expect(
            throws: RegistryError.tooManyRedirects("https://registry.example/v2/org/cache/blobs/\(Self.blobDigest)")
        ) {
            try client(transport).getBlob(repository: "org/cache", digest: Self.blobDigest)
        }
        #expect(transport.requests.count == RegistryClient.maxRedirects + 1)
    }
}

@Suite struct RegistryClientTagTests {
    private static let allTags = (0..<250).map { String(format: "v%03d", $0) }

    @Test func followsLinkHeaders() throws {
        let transport = InMemoryRegistry { request, _ in
            let query = URLComponents(url: request.url, resolvingAgainstBaseURL: false)?.queryItems ?? []
            let n = Int(query.first { $0.name == "n" }?.value ?? "") ?? 100
            let last = query.first { $0.name == "last" }?.value
            let start = last.map { Self.allTags.firstIndex(of: $0)! + 1 } ?? 0
            let page = Array(Self.allTags[start..<min(start + n, Self.allTags.count)])
            var headers: HTTPHeaders = [:]
            if start + n < Self.allTags.count {
                headers["Link"] = #"</v2/org/cache/tags/list?n=\#(n)&last=\#(page.last!)>; rel="next""#
            }
            let json = try! JSONSerialization.data(withJSONObject: ["name": "org/cache", "tags": page])
            return .init(200, headers: headers, body: json)
        }
        let tags = try client(transport).listTags(repository: "org/cache", pageSize: 100)
        #expect(tags == Self.allTags)
        #expect(transport.requests.count == 3)
        #expect(transport.requests[1].url.query == "n=100&last=v099")
    }

    @Test func fallsBackToLastWithoutLink() throws {
        let transport = InMemoryRegistry { request, _ in
            let query = URLComponents(url: request.url, resolvingAgainstBaseURL: false)?.queryItems ?? []
            let last = query.first { $0.name == "last" }?.value
            let start = last.map { Self.allTags.firstIndex(of: $0)! + 1 } ?? 0
            let page = Array(Self.allTags[start..<min(start + 100, Self.allTags.count)])
            return .init(200, body: try! JSONSerialization.data(withJSONObject: ["tags": page]))
        }
        #expect(try client(transport).listTags(repository: "org/cache", pageSize: 100) == Self.allTags)
        #expect(transport.requests.count == 3)
    }

    @Test func linkHeaderParsing() {
        let base = URL(string: "https://r.example/v2/a/tags/list?n=2")!
        #expect(
            RegistryClient.nextLink(
                [#"<https://r.example/x?a=1,2>; rel="prev", </v2/a/tags/list?n=2&last=b>; rel="next""#],
                relativeTo: base)
                == URL(string: "https://r.example/v2/a/tags/list?n=2&last=b"))
        #expect(RegistryClient.nextLink(["</p>; rel=prev"], relativeTo: base) == nil)
    }
}

@Suite struct RegistryClientErrorTests {
    @Test func notFoundDecodesErrorDocument() throws {
        let transport = InMemoryRegistry { _, _ in
            .init(
                404,
                json: #"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}"#)
        }
        do {
            _ = try client(transport).getManifest(repository: "org/cache", reference: "nope")
            Issue.record("expected notFound")
        } catch let error as RegistryError {
            guard case .notFound(let diagnostics) = error else {
                Issue.record("got \(error)")
                return
            }
            #expect(diagnostics.errors == [.init(code: "MANIFEST_UNKNOWN", message: "manifest unknown")])
            #expect(
                error.description
                    == "not found: GET https://registry.example/v2/org/cache/manifests/nope: MANIFEST_UNKNOWN (manifest unknown)"
            )
            #expect(!error.isTransient)
        }
    }

    @Test func manifestDigestMismatchByDigest() throws {
        let other = SHA256Hasher.digest(Data("something else".utf8))
        let transport = InMemoryRegistry { _, _ in manifestReply(digestHeader: nil) }
        #expect(
            throws: RegistryError.digestMismatch(
                expected: other, actual: manifestDigest, size: Int64(manifestData.count))
        ) {
            try client(transport).getManifest(repository: "org/cache", reference: other.description)
        }
    }

    @Test func manifestDigestMismatchAgainstHeader() throws {
        let other = SHA256Hasher.digest(Data("something else".utf8))
        let transport = InMemoryRegistry { _, _ in manifestReply(digestHeader: other) }
        #expect(
            throws: RegistryError.digestMismatch(
                expected: other, actual: manifestDigest, size: Int64(manifestData.count))
        ) {
            try client(transport).getManifest(repository: "org/cache", reference: "v1")
        }
    }

    @Test func manifestByDigestVerifies() throws {
        let transport = InMemoryRegistry { _, _ in manifestReply() }
        let fetched = try client(transport).getManifest(repository: "org/cache", reference: manifestDigest.description)
        #expect(fetched.digest == manifestDigest)
        #expect(transport.requests[0].url.path == "/v2/org/cache/manifests/\(manifestDigest)")
    }

    @Test func oversizedManifestIsRefused() throws {
        let transport = InMemoryRegistry { _, _ in .init(200, body: Data(count: 5 << 20)) }
        #expect(
            throws: RegistryError.tooLarge(url: "https://registry.example/v2/org/cache/manifests/big", limit: 4 << 20)
        ) {
            try client(transport).getManifest(repository: "org/cache", reference: "big")
        }
    }

    @Test func blobDigestMismatchAfterStreaming() throws {
        let served = Data(repeating: "tampered ", count: 4000)
        let expected = SHA256Hasher.digest(Data("the real blob".utf8))
        let transport = InMemoryRegistry { _, _ in .init(200, body: served) }
        var received = Data()
        #expect(
            throws: RegistryError.digestMismatch(
                expected: expected, actual: SHA256Hasher.digest(served), size: Int64(served.count))
        ) {
            try client(transport).getBlob(repository: "org/cache", digest: expected) { received.append(contentsOf: $0) }
        }
        #expect(received == served, "bytes reach the sink; the throw is what keeps the caller from committing")
    }

    @Test func truncatedStreamIsNotRetriedAfterBytesReachedTheSink() throws {
        let blob = Data(repeating: "abc", count: 3000)
        let transport = InMemoryRegistry { _, _ in .init(200, body: blob, failAfter: 1500) }
        let sleeper = SleepRecorder()
        var received = 0
        #expect {
            try client(transport, sleeper: sleeper).getBlob(repository: "org/cache", digest: SHA256Hasher.digest(blob))
            {
                received += $0.count
            }
        } throws: { ($0 as? RegistryError)?.isTransient == true }
        #expect(received == 1500)
        #expect(transport.requests.count == 1)
    }

    @Test func truncatedBodyIsDetectedAndRetried() throws {
        let blob = Data(repeating: "config", count: 600)
        let digest = SHA256Hasher.digest(blob)
        // First answer claims more bytes than it sends; the retry is whole.
        let transport = InMemoryRegistry { _, seen in
            seen == 0 ? .init(200, body: blob.prefix(100), contentLength: blob.count) : .init(200, body: blob)
        }
        let sleeper = SleepRecorder()
        #expect(try client(transport, sleeper: sleeper).getBlob(repository: "org/cache", digest: digest) == blob)
        #expect(transport.requests.count == 2)
        #expect(sleeper.recorded == [.milliseconds(200)])
    }

    @Test func truncatedBodyFailsWhenAlwaysTruncated() throws {
        let transport = InMemoryRegistry { _, _ in .init(200, body: Data(count: 10), contentLength: 20) }
        #expect {
            try client(transport).getManifest(repository: "org/cache", reference: "v1")
        } throws: { error in
            guard case RegistryError.transport(let text) = error else { return false }
            return text.contains("truncated after 10 of 20 bytes")
        }
        #expect(transport.requests.count == 4)
    }

    @Test func retryAfterIsHonoured() throws {
        let transport = InMemoryRegistry { _, seen in
            seen == 0
                ? .init(429, headers: ["Retry-After": "3"], json: #"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#)
                : manifestReply()
        }
        let sleeper = SleepRecorder()
        _ = try client(transport, sleeper: sleeper).getManifest(repository: "org/cache", reference: "v1")
        #expect(sleeper.recorded == [.seconds(3)])
        #expect(transport.requests.count == 2)
    }

    @Test func retriesExhaustedOnServerError() throws {
        let transport = InMemoryRegistry { _, _ in .init(500, body: Data("boom".utf8)) }
        let sleeper = SleepRecorder()
        #expect(
            throws: RegistryError.registry(
                status: 500,
                diagnostics: .init(request: "GET https://registry.example/v2/org/cache/tags/list", body: "boom"))
        ) {
            try client(transport, sleeper: sleeper).listTags(repository: "org/cache")
        }
        #expect(transport.requests.count == 4)
        #expect(sleeper.recorded == [.milliseconds(200), .milliseconds(400), .milliseconds(800)])
    }

    @Test func clientErrorsAreNotRetried() throws {
        let transport = InMemoryRegistry { _, _ in .init(400, json: #"{"errors":[{"code":"NAME_INVALID"}]}"#) }
        #expect(throws: RegistryError.self) { try client(transport).listTags(repository: "org/cache") }
        #expect(transport.requests.count == 1)
    }

    @Test func badArgumentsNeverReachTheNetwork() throws {
        let transport = InMemoryRegistry { _, _ in manifestReply() }
        let registry = try client(transport)
        #expect(throws: RegistryError.self) { try registry.getManifest(repository: "../etc", reference: "v1") }
        #expect(throws: RegistryError.self) { try registry.getManifest(repository: "org/cache", reference: "a/b") }
        #expect(throws: RegistryError.self) { try registry.getManifest(repository: "org/cache", reference: "md5:abc") }
        #expect(transport.requests.isEmpty)
    }

    @Test func retryPolicyDelays() {
        let policy = RetryPolicy()
        #expect(
            (0..<7).map { policy.delay(beforeRetry: $0) } == [
                .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600), .milliseconds(3200),
                .seconds(5), .seconds(5),
            ])
        #expect(policy.wait(beforeRetry: 0, retryAfter: .seconds(3600)) == nil, "longer than maxRetryAfter: fail now")
        #expect(policy.wait(beforeRetry: 0, retryAfter: .seconds(30)) == .seconds(30))
        #expect(policy.wait(beforeRetry: 2, remaining: .seconds(1)) == .milliseconds(800))
        #expect(policy.wait(beforeRetry: 3, remaining: .seconds(1)) == nil, "a backoff that outlasts the budget")
        #expect(policy.wait(beforeRetry: 0, retryAfter: .seconds(2), remaining: .seconds(2)) == nil)
        let now = Date(timeIntervalSince1970: 1_445_412_480)  // Wed, 21 Oct 2015 07:28:00 GMT
        #expect(RetryPolicy.parseRetryAfter("Wed, 21 Oct 2015 07:28:10 GMT", now: now) == .seconds(10))
        #expect(RetryPolicy.parseRetryAfter("soon", now: now) == nil)
    }
}

@Suite struct RegistryClientBlobTests {
    private static let blob = Data((0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
    private static let digest = SHA256Hasher.digest(blob)

    @Test func rangeRequest() throws {
        let transport = InMemoryRegistry { request, _ in
            #expect(request.headers["Range"] == "bytes=100-1099")
            return .init(206, headers: ["Content-Range": "bytes 100-1099/10000"], body: Self.blob[100..<1100])
        }
        var received = Data()
        let count = try client(transport).getBlob(repository: "org/cache", digest: Self.digest, range: 100..<1100) {
            received.append(contentsOf: $0)
        }
        #expect(count == 1000)
        #expect(received == Self.blob[100..<1100])
    }

    @Test func rangeIgnoredByServer() throws {
        let transport = InMemoryRegistry { _, _ in .init(200, body: Self.blob) }
        var received = Data()
        try client(transport).getBlob(repository: "org/cache", digest: Self.digest, range: 2500..<7321) {
            received.append(contentsOf: $0)
        }
        #expect(received == Self.blob[2500..<7321])
    }

    @Test func rangeMismatchIsInvalid() throws {
        let transport = InMemoryRegistry { _, _ in
            .init(206, headers: ["Content-Range": "bytes 0-999/10000"], body: Self.blob[0..<1000])
        }
        #expect {
            try client(transport).getBlob(repository: "org/cache", digest: Self.digest, range: 100..<1100) { _ in }
        } throws: { error in
            if case RegistryError.invalidResponse = error { return true } else { return false }
        }
    }

    @Test func sinkErrorAbortsAndIsRethrown() throws {
        struct DiskFull: Error {}
        let transport = InMemoryRegistry { _, _ in .init(200, body: Self.blob) }
        var chunks = 0
        #expect(throws: DiskFull.self) {
            try client(transport).getBlob(repository: "org/cache", digest: Self.digest) { _ in
                chunks += 1
                if chunks == 2 { throw DiskFull() }
            }
        }
        #expect(chunks == 2)
        #expect(transport.requests.count == 1)
    }

    @Test func blobExists() throws {
        let transport = InMemoryRegistry { request, _ in
            request.url.path.hasSuffix(Self.digest.description) ? .init(200, body: Self.blob) : .init(404)
        }
        let registry = try client(transport)
        #expect(try registry.blobExists(repository: "org/cache", digest: Self.digest) == 10_000)
        #expect(try registry.blobExists(repository: "org/cache", digest: manifestDigest) == nil)
        #expect(transport.requests.allSatisfy { $0.method == .head })
    }

    @Test func pushBlobAndManifest() throws {
        let transport = InMemoryRegistry { request, _ in
            switch (request.method, request.url.path) {
            case (.head, _): return .init(404)
            case (.post, let path) where path.hasPrefix("/v2/org/cache/blobs/uploads"):
                return .init(202, headers: ["Location": "/v2/org/cache/blobs/uploads/abc?_state=xyz"])
            case (.put, "/v2/org/cache/blobs/uploads/abc"): return .init(201)
            case (.put, "/v2/org/cache/manifests/v2"):
                return .init(201, headers: ["Docker-Content-Digest": manifestDigest.description])
            default: return .init(400)
            }
        }
        let registry = try client(transport)
        #expect(try registry.putBlob(repository: "org/cache", data: Self.blob) == Self.digest)
        let put = try #require(transport.requests.first { $0.method == .put })
        let query = URLComponents(url: put.url, resolvingAgainstBaseURL: false)?.queryItems
        #expect(
            query == [
                URLQueryItem(name: "_state", value: "xyz"),
                URLQueryItem(name: "digest", value: Self.digest.description),
            ])
        #expect(put.body == Self.blob)
        #expect(
            try registry.putManifest(
                repository: "org/cache", reference: "v2", mediaType: MediaType.ociManifest, data: manifestData)
                == manifestDigest)
        #expect(transport.requests.last?.headers["Content-Type"] == MediaType.ociManifest)
    }
}

@Suite struct RegistryClientConcurrencyTests {
    @Test func manyThreadsShareOneClient() throws {
        let transport = tokenRegistry(tokens: { "tok\($0)" }, valid: { $0.hasPrefix("tok") })
        let registry = try client(transport)
        let failures = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 32) { _ in
            do {
                let fetched = try registry.getManifest(repository: "org/cache", reference: "v1")
                if fetched.digest != manifestDigest { failures.withLock { $0 += 1 } }
            } catch {
                failures.withLock { $0 += 1 }
            }
        }
        #expect(failures.withLock { $0 } == 0)
        // Threads racing the first 401 may each fetch a token; once cached, nobody fetches again.
        let fetchesBefore = transport.requests(toHost: "auth.example").count
        _ = try registry.getManifest(repository: "org/cache", reference: "v1")
        #expect(transport.requests(toHost: "auth.example").count == fetchesBefore)
    }
}
