import BlobCache
import Foundation
import OCI
import TestSupport
import Testing

/// The one description of what lies below the cache directory.
@Suite struct CacheLayoutTests {
    @Test func everyPartHasOneName() throws {
        let layout = try CacheLayout(root: "/var/lib/mcvfs")
        let digest = try Digest(hex: String(repeating: "ab", count: 32))
        #expect(layout.blob(digest) == "/var/lib/mcvfs/blobs/sha256/" + digest.hex)
        #expect(layout.ingest == "/var/lib/mcvfs/ingest")
        #expect(layout.index(of: digest) == "/var/lib/mcvfs/index/sha256/\(digest.hex).json")
        #expect(layout.indexLock(of: digest) == "/var/lib/mcvfs/index/sha256/\(digest.hex).lock")
        #expect(layout.catalogs == "/var/lib/mcvfs/catalogs")
        #expect(layout.leases == "/var/lib/mcvfs/leases")
        #expect(layout.log(named: "mount-mnt.log") == "/var/lib/mcvfs/logs/mount-mnt.log")
    }

    @Test func theRootIsAbsoluteAndStandardized() throws {
        #expect(try CacheLayout(root: "/srv//cache/./mcvfs/").root == "/srv/cache/mcvfs")
        #expect(throws: CacheError.self) { try CacheLayout(root: "relative/cache") }
        #expect(throws: CacheError.self) { try CacheLayout(root: "") }
    }

    @Test func uppersAreNamedAfterWhatIsMountedStablyAcrossReleases() throws {
        let layout = try CacheLayout(root: "/c")
        let reference = try ImageReference(parsing: "localhost:5000/org/cache")
        // The name earlier releases gave this reference's uppers: a remount after an upgrade finds its kernels.
        #expect(layout.uppers(of: reference) == "/c/upper/localhost_5000_org_cache-909e900228f5")
        let long = try ImageReference(parsing: "localhost:5000/" + String(repeating: "a/", count: 60) + "cache")
        let name = (layout.uppers(of: long) as NSString).lastPathComponent
        #expect(name.count == 80 + 1 + 12)
    }

    @Test func theStoreAndItsLayoutAgree() throws {
        let directory = try TemporaryDirectory()
        let layout = try CacheLayout(root: directory.path)
        let store = try DirectoryBlobStore(layout: layout)
        let stored = try store.ingest(data: Data("blob".utf8))
        #expect(store.path(for: stored.digest) == layout.blob(stored.digest))
        #expect(try DirectoryBlobStore(root: directory.url).layout == layout)
    }
}
