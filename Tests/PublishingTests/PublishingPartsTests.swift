import BlobCache
import ContentHash
import Foundation
import LayerArchive
import OCI
import Synchronization
import TestSupport
import Testing

@testable import Publishing

@Suite struct UpperSelectionTests {
    @Test func aUserPublishesTheirOwnUpperOnly() throws {
        #expect(try UpperSelection.uppers(root: "/u", isolation: .perUser, caller: 1000, uids: []) == ["/u/1000"])
        #expect(try UpperSelection.uppers(root: "/u", isolation: .perUser, caller: 1000, uids: [1000]) == ["/u/1000"])
        #expect(throws: UpperSelection.Refused.anotherUsersUpper) {
            try UpperSelection.uppers(root: "/u", isolation: .perUser, caller: 1000, uids: [1001])
        }
        #expect(throws: UpperSelection.Refused.sharedUpperNeedsRoot) {
            try UpperSelection.uppers(root: "/u", isolation: .shared, caller: 1000, uids: [])
        }
    }

    @Test func rootNamesTheUidsOrTakesTheSharedUpperButNeverEveryUsers() throws {
        #expect(try UpperSelection.uppers(root: "/u", isolation: .perUser, caller: 0, uids: []) == ["/u/0"])
        #expect(
            try UpperSelection.uppers(root: "/u", isolation: .perUser, caller: 0, uids: [1001, 1000, 1001])
                == ["/u/1001", "/u/1000"])
        #expect(try UpperSelection.uppers(root: "/u", isolation: .shared, caller: 0, uids: []) == ["/u/shared"])
        #expect(throws: UpperSelection.Refused.uidsOfASharedUpper) {
            try UpperSelection.uppers(root: "/u", isolation: .shared, caller: 0, uids: [1000])
        }
    }
}

@Suite struct PublishLedgerTests {
    @Test func eachUpperKeepsItsOwnRecordPerRepository() throws {
        let directory = try TemporaryDirectory()
        let layout = try CacheLayout(root: directory.path)
        let ledger = PublishLedger(layout: layout, repository: "r/a")
        #expect(ledger.record(of: "/u/0").keys.isEmpty)
        try ledger.withLock {
            try ledger.record(["K1", "K2"], tag: "fleet-x-1", from: "/u/0")
            try ledger.record(["K3"], tag: "fleet-x-2", from: "/u/0")
            try ledger.record(["K9"], tag: "fleet-x-3", from: "/u/1000")
        }
        #expect(ledger.record(of: "/u/0").keys == ["K1": "fleet-x-1", "K2": "fleet-x-1", "K3": "fleet-x-2"])
        #expect(ledger.record(of: "/u/1000").keys == ["K9": "fleet-x-3"])
        #expect(PublishLedger(layout: layout, repository: "r/b").record(of: "/u/0").keys.isEmpty)
    }

    @Test func theLockSerializesPublishesToOneRepository() throws {
        let directory = try TemporaryDirectory()
        let ledger = PublishLedger(layout: try CacheLayout(root: directory.path), repository: "r/a")
        let depth = Mutex((inside: 0, deepest: 0))
        concurrently(8) { i in
            try? ledger.withLock {
                depth.withLock {
                    $0.inside += 1
                    $0.deepest = max($0.deepest, $0.inside)
                }
                usleep(2000)
                try ledger.record(["K\(i)"], tag: "t\(i)", from: "/u/0")
                depth.withLock { $0.inside -= 1 }
            }
        }
        #expect(depth.withLock { $0.deepest } == 1)
        #expect(ledger.record(of: "/u/0").keys.count == 8, "no record lost to a concurrent publish")
    }
}

@Suite struct ProvidedKeysTests {
    @Test func theKeysOfAnImageAreTheNamesBelowItsCacheRoots() {
        let digest = SHA256Hasher.digest(Data("layer".utf8))
        let index = LayerIndex(
            layer: digest,
            entries: [
                TarEntry(path: "io.triton.cache", kind: .directory, mode: 0o755),
                TarEntry(path: "io.triton.cache/KEY1", kind: .directory, mode: 0o755),
                TarEntry(path: "io.triton.cache/KEY1/a.json", kind: .file, mode: 0o644),
                TarEntry(path: "io.triton.cache/KEY2/b", kind: .file, mode: 0o644),
                TarEntry(path: "io.triton.manifest/manifest.json", kind: .file, mode: 0o644),
                TarEntry(path: "io.vllm.cache/torch_compile_cache/x/y", kind: .file, mode: 0o644),
            ])
        // A vLLM image provides its hash directories too (`x`), which a vLLM publish leaves out.
        #expect(ProvidedKeys.topLevelNames([index]) == ["KEY1", "KEY2", "torch_compile_cache", "x"])
    }
}
