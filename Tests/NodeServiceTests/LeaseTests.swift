import BlobCache
import Foundation
import Glibc
import LayerArchive
import OCI
import TestSupport
import Testing

@testable import NodeService

@Suite struct LeaseTests {
    @Test func heldLeaseIsLiveAndReleasedLeaseIsGone() throws {
        let root = try TemporaryDirectory()
        let leases = try LeaseDirectory(layout: CacheLayout(root: root.path))
        let held = try leases.acquire(Lease(mountpoint: "/mnt", reference: "r/x", layers: [d("a")], blobs: [d("c")]))
        #expect(held.file.hasSuffix("/leases/\(getpid()).json"))
        try held.add(blobs: [d("1"), d("c")])
        let live = try leases.withLock { leases.live() }
        #expect(live.count == 1)
        #expect(live.first?.digests == [d("a"), d("c"), d("1")])
        #expect(leases.removeStale().isEmpty)
        held.release()
        #expect(try leases.withLock { leases.live() }.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: held.file))
    }

    @Test func leaseOfADeadOwnerIsStaleWhateverItsPid() throws {
        let root = try TemporaryDirectory()
        let leases = try LeaseDirectory(layout: CacheLayout(root: root.path))
        // A crash leftover: a lease file nobody holds locked, naming our own (live) pid. Liveness is the lock.
        let lease = Lease(mountpoint: "/mnt", reference: "r/x", layers: [d("a")], blobs: [])
        try LeaseDirectory.encoder.encode(lease).write(to: URL(fileURLWithPath: leases.path + "/\(getpid()).json"))
        #expect(leases.removeStale() == ["\(getpid()).json"])
        #expect(try leases.withLock { leases.live() }.isEmpty)
    }

    @Test func aSecondLeaseOfTheSamePidGetsItsOwnFile() throws {
        let root = try TemporaryDirectory()
        let leases = try LeaseDirectory(layout: CacheLayout(root: root.path))
        let first = try leases.acquire(Lease(mountpoint: "/a", reference: "r/x", layers: [d("a")], blobs: []))
        let second = try leases.acquire(Lease(mountpoint: "/b", reference: "r/y", layers: [d("b")], blobs: []))
        #expect(first.file != second.file)
        #expect(try leases.withLock { leases.live() }.compactMap(\.mountpoint).sorted() == ["/a", "/b"])
    }

    @Test func janitorNeverRemovesLeasedBlobs() throws {
        let root = try TemporaryDirectory()
        let store = try DirectoryBlobStore(layout: CacheLayout(root: root.path))
        let janitor = try CacheJanitor(store: store)
        var stored: [String: StoredBlob] = [:]
        for name in ["layer-a", "file-a", "layer-b", "file-b", "config"] {
            stored[name] = try store.ingest(data: Data((name + String(repeating: ".", count: 1000)).utf8))
        }
        func index(_ layer: String, _ file: String) throws {
            let persisted = """
                {"formatVersion":\(LayerIndexCache.formatVersion),"index":{"layer":"\(stored[layer]!.digest)","entries":[\
                {"path":"io.triton.cache/K/f","kind":"file","mode":420,"size":1,"mtime":0,"content":"\(stored[file]!.digest)"}]}}
                """
            try Data(persisted.utf8).write(to: URL(fileURLWithPath: janitor.indexes.path(for: stored[layer]!.digest)))
        }
        try index("layer-a", "file-a")
        try index("layer-b", "file-b")
        #expect(try janitor.inventory().indexes.count == 2)
        let held = try janitor.leases.acquire(
            Lease(mountpoint: "/m", reference: "r/x", layers: [stored["layer-a"]!.digest], blobs: []))
        let kinds = try janitor.inventory().kinds
        #expect(kinds[stored["layer-a"]!.digest] == .layer && kinds[stored["layer-b"]!.digest] == .layer)
        #expect(kinds[stored["file-a"]!.digest] == .file && kinds[stored["config"]!.digest] == .blob)
        let plan = try janitor.enforce(maxSize: 0)
        #expect(plan.overBound)
        for name in ["layer-a", "file-a"] { #expect(store.contains(stored[name]!.digest)) }
        for name in ["layer-b", "file-b", "config"] { #expect(!store.contains(stored[name]!.digest)) }
        #expect(janitor.indexes.load(layer: stored["layer-a"]!.digest) != nil)
        #expect(janitor.indexes.load(layer: stored["layer-b"]!.digest) == nil)
        held.release()
        try janitor.enforce(maxSize: 0)
        #expect(try store.list().isEmpty)
    }
}
