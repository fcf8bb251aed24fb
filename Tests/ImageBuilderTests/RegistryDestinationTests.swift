import Foundation
import Registry
import Synchronization
import TestSupport
import Testing

@testable import ImageBuilder

/// Two nodes that compiled the same kernels publish the same image at once; the registry may then refuse a
/// manifest naming a blob it accepted a moment before. The destination pushes the blobs and the manifest again.
@Suite struct RegistryDestinationTests {
    static let blobUnknown = InMemoryRegistry.Reply(
        400, json: #"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#)

    /// Upload sessions started.
    final class Posts: Sendable {
        private let count = Mutex(0)
        func add() { count.withLock { $0 += 1 } }
        var value: Int { count.withLock { $0 } }
    }

    /// A registry without the blobs that takes uploads, and answers manifest PUTs with `manifest(n)` for the n-th.
    static func registry(
        posts: Posts, manifest: @escaping @Sendable (Int) -> InMemoryRegistry.Reply
    ) -> InMemoryRegistry {
        InMemoryRegistry { request, seen in
            switch (request.method, request.url.path) {
            case (.head, _): return .init(404)
            case (.post, let path) where path.hasSuffix("/blobs/uploads"):
                posts.add()
                return .init(202, headers: ["Location": "/v2/org/cache/blobs/uploads/u\(seen)"])
            case (.put, let path) where path.contains("/blobs/uploads/"): return .init(201)
            case (.put, let path) where path.contains("/manifests/"): return manifest(seen)
            default: return .init(400)
            }
        }
    }

    func image(in directory: TemporaryDirectory) throws -> BuiltImage {
        let builder = ImageBuilder(scan: try CacheScan(scanning: Fixtures.cuda90), options: .init())
        return try builder.build(try #require(try builder.plans().first), in: directory.url)
    }

    func destination(_ registry: InMemoryRegistry) throws -> RegistryDestination {
        RegistryDestination(
            client: try RegistryClient(
                registry: "registry.example", transport: registry, options: RegistryOptions(sleep: { _ in })),
            repository: "org/cache")
    }

    @Test func aManifestRefusedForABlobJustPushedGoesUpAgainWithItsBlobs() throws {
        let directory = try TemporaryDirectory()
        let image = try image(in: directory)
        let posts = Posts()
        let registry = Self.registry(posts: posts) { n in n == 0 ? Self.blobUnknown : .init(201) }
        let digest = try destination(registry).publish(image, tag: "v1", progress: PublishProgress())
        #expect(digest == image.manifestDescriptor.digest)
        // Every blob went up twice: checked again (the registry still lacked them) before the second manifest.
        #expect(posts.value == 2 * image.blobs.count)
    }

    @Test func aManifestTheRegistryKeepsRefusingIsAnErrorAfterItsTries() throws {
        let directory = try TemporaryDirectory()
        let image = try image(in: directory)
        let posts = Posts()
        let registry = Self.registry(posts: posts) { _ in Self.blobUnknown }
        #expect(throws: RegistryError.self) {
            try destination(registry).publish(image, tag: "v1", progress: PublishProgress())
        }
        #expect(posts.value == RegistryDestination.manifestTries * image.blobs.count)
    }

    /// Any other refusal is not retried.
    @Test func anotherRefusalOfTheManifestIsNotRetried() throws {
        let directory = try TemporaryDirectory()
        let image = try image(in: directory)
        let posts = Posts()
        let registry = Self.registry(posts: posts) { _ in InMemoryRegistry.Reply.error(400, code: "MANIFEST_INVALID") }
        #expect(throws: RegistryError.self) {
            try destination(registry).publish(image, tag: "v1", progress: PublishProgress())
        }
        #expect(posts.value == image.blobs.count)
    }
}
