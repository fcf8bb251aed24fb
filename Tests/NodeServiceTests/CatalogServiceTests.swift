import BlobCache
import Foundation
import OCI
import Registry
import Synchronization
import TestSupport
import Testing

@testable import NodeService

/// One catalog service for every command: offline from the record, the mirror first, the origin, and the
/// recorded catalog when the origin is unreachable; the signature policy on whatever was resolved.
@Suite struct CatalogServiceTests {
    let node: NodeFixture
    let cache: NodeCache

    init() throws {
        node = try NodeFixture()
        cache = try node.cache()
    }

    var records: CatalogRecords { CatalogRecords(layout: node.layout) }
    var selectionKey: String { NodeFixture.selection.description }

    @Test func theOriginResolvesAndEachRecordingModeKeepsWhatItSays() throws {
        let none = try node.catalogs(try node.upstream(), recording: .none, cache: cache).resolve(NodeFixture.selection)
        #expect(none.used.map(\.name) == ["cuda-sm90"])
        #expect(records.load(reference: NodeFixture.reference.description, selection: selectionKey) == nil)

        let recorded = try node.catalogs(try node.upstream(), recording: .record, cache: cache)
            .resolve(NodeFixture.selection)
        #expect(recorded == none)
        #expect(records.load(reference: NodeFixture.reference.description, selection: selectionKey) == recorded)
        #expect(records.load(reference: NodeFixture.reference.description, selection: "hip:gfx942") == nil)
    }

    @Test func offlineServesTheRecordWithoutARegistryAndFailsWithoutOne() throws {
        let offline = node.catalogs(try node.upstream(offline: true), cache: cache)
        #expect(throws: ServiceError.noRecordedCatalog(reference: "registry.test/org/cache", selection: selectionKey)) {
            try offline.resolve(NodeFixture.selection)
        }
        let online = try node.catalogs(try node.upstream(), cache: cache).resolve(NodeFixture.selection)
        let requests = node.origin.requests.count
        #expect(try offline.resolve(NodeFixture.selection) == online)
        #expect(node.origin.requests.count == requests)
        #expect(node.log.recorded.contains("info: offline: serving the digests recorded for registry.test/org/cache"))
    }

    @Test func anUnreachableOriginFallsBackToTheRecordOnlyForMounts() throws {
        let online = try node.catalogs(try node.upstream(), cache: cache).resolve(NodeFixture.selection)
        node.origin.script { _ in .error(503) }
        #expect(try node.catalogs(try node.upstream(), cache: cache).resolve(NodeFixture.selection) == online)
        #expect(node.log.recorded.last?.hasPrefix("warning: registry unreachable") == true)
        #expect(throws: RegistryError.self) {
            try node.catalogs(try node.upstream(), recording: .record, cache: cache).resolve(NodeFixture.selection)
        }
        // A registry that answers, but says no, is never papered over with an old record.
        node.origin.script { _ in .error(401, code: "UNAUTHORIZED") }
        #expect(throws: RegistryError.self) {
            try node.catalogs(try node.upstream(), cache: cache).resolve(NodeFixture.selection)
        }
    }

    @Test func theMirrorResolvesFirstUnderTheOriginsName() throws {
        let upstream = try node.upstream(mirrored: true)
        let catalog = try node.catalogs(upstream, cache: cache).resolve(NodeFixture.selection)
        #expect(node.origin.requests.isEmpty)
        #expect(catalog.reference == "registry.test/org/cache" && catalog.repository == "registry.test/org/cache")
        #expect(catalog.used.map(\.name) == ["cuda-sm90"])
        #expect(upstream.mirrorFallbacks == 0)
        #expect(records.load(reference: "registry.test/org/cache", selection: selectionKey) == catalog)
    }

    @Test func aFailingMirrorFallsBackToTheOriginAndIsCounted() throws {
        node.mirror.script { _ in .error(500) }
        let upstream = try node.upstream(mirrored: true)
        let catalog = try node.catalogs(upstream, cache: cache).resolve(NodeFixture.selection)
        #expect(catalog.used.map(\.name) == ["cuda-sm90"])
        #expect(upstream.mirrorFallbacks == 1)
        #expect(node.log.recorded.contains { $0.contains("falling back to the origin registry.test") })
        #expect(!node.origin.requests.isEmpty)
    }

    @Test func thePolicyJudgesTheResolvedCatalogThroughTheOrigin() throws {
        let policy = RecordingPolicy(refuse: "cuda-sm90")
        let catalog = try node.catalogs(try node.upstream(mirrored: true), cache: cache)
            .resolve(NodeFixture.selection, policy: policy)
        #expect(catalog.used.isEmpty)
        #expect(catalog.skipped.map(\.skipReason) == ["refused by the test policy"])
        #expect(policy.clients == ["registry.test"])
    }

    @Test func offlineThePolicyStillJudgesTheRecordedCatalogWithoutARegistry() throws {
        _ = try node.catalogs(try node.upstream(), cache: cache).resolve(NodeFixture.selection)
        let offline = node.catalogs(try node.upstream(offline: true), cache: cache)
        let policy = RecordingPolicy(refuse: "cuda-sm90")
        let judged = try offline.resolve(NodeFixture.selection, policy: policy)
        #expect(judged.used.isEmpty)
        #expect(policy.clients == ["(none)"])
        let unjudged = RecordingPolicy(refuse: "cuda-sm90", applies: false)
        let unverified = try offline.resolve(NodeFixture.selection, policy: unjudged)
        #expect(unverified.used.map(\.name) == ["cuda-sm90"])
        #expect(unjudged.clients.isEmpty)
    }

    @Test func aCorruptRecordIsNoRecord() throws {
        let catalog = try node.catalogs(try node.upstream(), cache: cache).resolve(NodeFixture.selection)
        let file = records.file(reference: catalog.reference, selection: selectionKey)
        #expect(FileManager.default.fileExists(atPath: file))
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: file))
        #expect(records.load(reference: catalog.reference, selection: selectionKey) == nil)
    }
}

/// A policy that refuses one image by name and records which registry it was asked through.
final class RecordingPolicy: CatalogPolicy, Sendable {
    let refuse: String?
    let appliesToReference: Bool
    private let seen = Mutex<[String]>([])

    init(refuse: String?, applies: Bool = true) {
        self.refuse = refuse
        self.appliesToReference = applies
    }

    var clients: [String] { seen.withLock { $0 } }

    func applies(to reference: ImageReference) throws -> Bool { appliesToReference }

    func enforce(on catalog: inout Catalog, reference: ImageReference, client: RegistryClient?) throws {
        seen.withLock { $0.append(client?.registry ?? "(none)") }
        for i in catalog.entries.indices where catalog.entries[i].name == refuse {
            catalog.entries[i].skipReason = "refused by the test policy"
        }
    }
}
