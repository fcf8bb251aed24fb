import BlobCache
import Foundation
import Glibc
import LayerArchive
import OCI
import Registry
import Synchronization
import TestSupport
import Testing

@testable import NodeService

/// The leased provider: the lease is on disk before anything is fetched, every fetch runs under the lease lock,
/// eviction beside it takes nothing it holds, and the mirror falls back to the origin.
@Suite struct LeasedLayerProviderTests {
    let node: NodeFixture
    let cache: NodeCache

    init() throws {
        node = try NodeFixture()
        cache = try node.cache()
    }

    func provider(
        _ upstream: Upstream, command: String = "fetch", mountpoint: String? = nil, lazy: Bool = false
    ) throws -> LeasedLayerProvider {
        let catalog = try node.catalogs(upstream, cache: cache).resolve(NodeFixture.selection)
        return try LeasedLayerProvider(
            catalog: catalog, upstream: upstream, cache: cache,
            options: .init(command: command, mountpoint: mountpoint, lazy: lazy))
    }

    func liveLeases() throws -> [Lease] { try cache.janitor.leases.withLock { cache.janitor.leases.live() } }

    @Test func theLeaseNamesTheLayersBeforeAnythingIsFetched() throws {
        let layers = try provider(try node.upstream(), command: "extract")
        #expect(NodeFixture.blobRequests(node.origin).allSatisfy { !$0.hasSuffix(node.layer.digest.description) })
        let lease = try #require(try liveLeases().first)
        #expect(lease.command == "extract" && lease.mountpoint == nil && lease.holder == "extract")
        #expect(lease.reference == "registry.test/org/cache")
        #expect(lease.layers == [node.layer.digest] && lease.blobs.isEmpty)
        layers.release()
        #expect(try liveLeases().isEmpty)
    }

    @Test func aWholeLayerDownloadsLeasedButOutsideTheLeaseLock() throws {
        // The download must not hold leases/.lock (eviction, and every other image's lease bookkeeping, would wait
        // for the network); what keeps an eviction from taking the layer meanwhile is the lease naming it.
        let lockFile = node.layout.leases + "/.lock"
        let seen = Mutex<[(lockFree: Bool, leased: Bool)]>([])
        let layerPath = "/v2/org/cache/blobs/\(node.layer.digest)"
        let leases = cache.janitor.leases
        let layer = node.layer.digest
        node.origin.script { request in
            guard request.url.path == layerPath else { return nil }
            // What an eviction does first: take leases/.lock exclusively, here without waiting.
            let fd = open(lockFile, O_RDWR | O_CLOEXEC)
            defer { close(fd) }
            let lockFree = flock(fd, LOCK_EX | LOCK_NB) == 0
            let leased = leases.live().contains { $0.layers.contains(layer) }
            seen.withLock { $0.append((lockFree, leased)) }
            return nil
        }
        let layers = try provider(try node.upstream())
        let indexes = try layers.indexUsedImages()
        #expect(indexes.map(\.image.name) == ["cuda-sm90"])
        #expect(seen.withLock { $0.map(\.lockFree) } == [true])
        #expect(seen.withLock { $0.map(\.leased) } == [true])
        #expect(Set(indexes[0].layers[0].entries.compactMap(\.content)).count == NodeFixture.files.count)
    }

    @Test func pruningBesideTheProviderKeepsWhatItHoldsAndTakesItAllOnceReleased() throws {
        let layers = try provider(try node.upstream(), command: "mount", mountpoint: "/mnt/triton")
        let index = try layers.indexUsedImages()[0].layers[0]
        let lease = try #require(try liveLeases().first)
        #expect(lease.holder == "mount /mnt/triton")
        #expect(Set(lease.blobs) == index.contentDigests)  // first use added the files to the lease

        let plan = try cache.janitor.enforce(maxSize: 0)
        #expect(plan.removeIndexes.isEmpty)
        #expect(cache.store.packPath(for: node.layer.digest) != nil)
        for content in index.contentDigests {
            #expect(try layers.bytes(of: content).data().count > 0)
        }
        layers.release()
        let after = try cache.janitor.enforce(maxSize: 0)
        #expect(after.removeIndexes == [node.layer.digest])
        #expect(try cache.store.list().isEmpty)
    }

    @Test func aBoundIsEnforcedAfterAFirstUseAndTheEvictionsCounted() throws {
        // Something of an earlier mount nobody holds any more, bigger than the bound.
        let stale = try cache.store.ingest(data: Data(repeating: 7, count: 4096))
        let bounded = try node.cache(maxSize: 1)
        let catalog = try node.catalogs(try node.upstream(), cache: bounded).resolve(NodeFixture.selection)
        let layers = try LeasedLayerProvider(
            catalog: catalog, upstream: try node.upstream(), cache: bounded,
            options: .init(command: "fetch", lazy: false))
        _ = try layers.indexUsedImages()
        #expect(!bounded.store.contains(stale.digest))
        #expect(bounded.evictions.bytes >= 4096)
        #expect(bounded.store.packPath(for: node.layer.digest) != nil)
        #expect(
            node.log.recorded.contains { $0.hasPrefix("warning: cache:") && $0.contains("exceeds --cache-max-size") })
    }

    @Test func aFailingMirrorFallsBackToTheOriginForLayers() throws {
        let upstream = try node.upstream(mirrored: true)
        let layers = try provider(upstream)  // the catalog comes through the mirror
        node.mirror.script { request in request.url.path.contains("/blobs/") ? .error(500) : nil }
        #expect(try layers.indexUsedImages().count == 1)
        #expect(upstream.mirrorFallbacks == 1)
        #expect(NodeFixture.blobRequests(node.origin).contains { $0.hasSuffix(node.layer.digest.description) })
    }

    @Test func offlineServesOnlyWhatTheCacheHolds() throws {
        let online = try provider(try node.upstream())
        let index = try online.indexUsedImages()[0].layers[0]
        online.release()

        let offline = try provider(try node.upstream(offline: true))
        #expect(try offline.indexUsedImages()[0].layers[0] == index)
        for content in index.contentDigests { #expect(try !offline.bytes(of: content).data().isEmpty) }

        try cache.janitor.enforce(maxSize: 0)  // nothing holds it now
        offline.release()
        try cache.janitor.enforce(maxSize: 0)
        let cold = try provider(try node.upstream(offline: true))
        #expect(throws: (any Error).self) { try cold.indexUsedImages() }
    }
}
