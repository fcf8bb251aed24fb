import ContentHash
import Foundation
import OCI
import Synchronization
import TestSupport
import Testing

@testable import Registry

/// `uploadBlob`: monolithic below the chunk size, PATCH chunks above it, nothing when the registry has the blob.
@Suite struct UploadTests {
    static let blob = Data(repeating: "0123456789", count: 25_000)
    static let digest = SHA256Hasher.digest(blob)

    /// A registry that follows each upload session's Location and records what it received.
    final class Received: Sendable {
        let bytes = Mutex(Data())
        func append(_ data: Data?) { bytes.withLock { $0.append(data ?? Data()) } }
        var data: Data { bytes.withLock { $0 } }
    }

    static func registry(has: Bool = false, received: Received) -> InMemoryRegistry {
        InMemoryRegistry { request, _ in
            switch (request.method, request.url.path) {
            case (.head, _): return has ? .init(200, headers: ["Content-Length": String(blob.count)]) : .init(404)
            case (.post, let path) where path.hasSuffix("/blobs/uploads") || path.hasSuffix("/blobs/uploads/"):
                return .init(202, headers: ["Location": "/v2/org/cache/blobs/uploads/s0?_state=a"])
            case (.patch, let path) where path.hasPrefix("/v2/org/cache/blobs/uploads/s"):
                received.append(request.body)
                let n = Int(path.dropFirst("/v2/org/cache/blobs/uploads/s".count))! + 1
                return .init(202, headers: ["Location": "/v2/org/cache/blobs/uploads/s\(n)?_state=b\(n)"])
            case (.put, let path) where path.hasPrefix("/v2/org/cache/blobs/uploads/s"):
                received.append(request.body)
                return .init(201)
            default: return .init(400)
            }
        }
    }

    func client(_ transport: InMemoryRegistry) throws -> RegistryClient {
        try RegistryClient(
            registry: "registry.example", transport: transport, options: RegistryOptions(sleep: { _ in }))
    }

    func read(_ offset: Int64, _ count: Int) -> Data {
        Self.blob.subdata(in: Int(offset)..<Int(offset) + count)
    }

    @Test func smallBlobGoesUpInOnePut() throws {
        let received = Received()
        let transport = Self.registry(received: received)
        let uploaded = try client(transport).uploadBlob(
            repository: "org/cache", digest: Self.digest, size: Int64(Self.blob.count), chunkSize: 1 << 20, read: read)
        #expect(uploaded)
        #expect(transport.requests.map(\.method) == [.head, .post, .put])
        #expect(received.data == Self.blob)
        let query = URLComponents(url: transport.requests[2].url, resolvingAgainstBaseURL: false)?.queryItems
        #expect(query?.contains(URLQueryItem(name: "digest", value: Self.digest.description)) == true)
    }

    @Test func largeBlobGoesUpInChunksFollowingEachLocation() throws {
        let received = Received()
        let transport = Self.registry(received: received)
        var progress: [Int64] = []
        try client(transport).uploadBlob(
            repository: "org/cache", digest: Self.digest, size: Int64(Self.blob.count), chunkSize: 10_000, read: read,
            progress: { progress.append($0) })
        let patches = transport.requests.filter { $0.method == .patch }
        #expect(patches.map { $0.headers["Content-Range"] } == ["0-9999", "10000-19999", "20000-24999"])
        #expect(
            patches.map(\.url.path) == [
                "/v2/org/cache/blobs/uploads/s0", "/v2/org/cache/blobs/uploads/s1",
                "/v2/org/cache/blobs/uploads/s2",
            ])
        let put = try #require(transport.requests.last)
        #expect(put.method == .put && put.url.path == "/v2/org/cache/blobs/uploads/s3")
        #expect(put.body == Data())
        #expect(received.data == Self.blob)
        #expect(progress == [10_000, 20_000, 25_000])
    }

    @Test func blobTheRegistryHasIsNotSent() throws {
        let received = Received()
        let transport = Self.registry(has: true, received: received)
        let uploaded = try client(transport).uploadBlob(
            repository: "org/cache", digest: Self.digest, size: Int64(Self.blob.count), read: read)
        #expect(!uploaded)
        #expect(transport.requests.map(\.method) == [.head])
    }

    @Test func refusedUploadIsUnauthorized() throws {
        let transport = InMemoryRegistry { request, _ in
            request.method == .head ? .init(404) : .init(401, json: #"{"errors":[{"code":"DENIED"}]}"#)
        }
        #expect {
            try client(transport).uploadBlob(
                repository: "org/cache", digest: Self.digest, size: Int64(Self.blob.count), read: read)
        } throws: { error in
            if case RegistryError.unauthorized = error { return true }
            return false
        }
    }
}
