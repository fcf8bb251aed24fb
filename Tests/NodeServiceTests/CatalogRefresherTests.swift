import BlobCache
import Foundation
import OCI
import Registry
import Synchronization
import TestSupport
import Testing

@testable import NodeService

/// Live refresh over an in-memory registry: new and moved tags added to what is served, GPU selection and the
/// signature policy applied, content-derived tags never asked about again, failures changing nothing.
@Suite struct CatalogRefresherTests {
    let node: NodeFixture
    let cache: NodeCache
    let applied = Applied()

    init() throws {
        node = try NodeFixture()
        cache = try node.cache()
    }

    /// Pushes a cache image (its labels make its digest its own) under `tag`.
    @discardableResult
    func push(_ tag: String, summary: String = NodeFixture.summary, marker: String? = nil) throws -> Descriptor {
        try node.origin.pushImage(
            repository: "org/cache", tag: tag,
            labels: [CacheLabels.tritonSummary: summary, "marker": marker ?? tag],
            layers: [(Data("layer of \(marker ?? tag)".utf8), MediaType.ociLayerGzip)])
    }

    func refresher(policy: (any CatalogPolicy)? = nil) throws -> CatalogRefresher {
        let upstream = try node.upstream()
        let catalog = try node.catalogs(upstream, cache: cache).resolve(NodeFixture.selection, policy: policy)
        return CatalogRefresher(
            catalog: catalog, upstream: upstream, store: cache.store, records: CatalogRecords(layout: node.layout),
            selection: NodeFixture.selection, policy: policy, interval: .seconds(3600),
            apply: { [applied] added, _ in applied.record(added.map(\.name)) }, log: node.log.log)
    }

    func manifestRequests(_ tag: String) -> [String] {
        node.origin.requests.filter { $0.url.path.hasSuffix("/manifests/\(tag)") }.map(\.method.rawValue)
    }

    @Test func newTagsAreAddedAfterWhatIsServedAndOtherGPUsAreSkippedWithTheReason() throws {
        let refresher = try refresher()
        #expect(refresher.refreshOnce().isEmpty, "nothing new yet")
        try push("v2")
        try push("rocm", summary: #"{"targets":[{"backend":"hip","arch":"gfx942","warp_size":64}]}"#)
        #expect(refresher.refreshOnce().map(\.name) == ["v2"])
        #expect(applied.calls == [["v2"]])
        let status = refresher.status
        #expect(status.refreshes == 2 && status.failures == 0 && status.imagesAdded == 1 && status.tags == 3)
        #expect(status.lastAdded.count == 1 && status.lastAdded[0].hasPrefix("v2 sha256:"))
        #expect(status.lastSkipped.count == 1 && status.lastSkipped[0].hasPrefix("rocm: targets hip:gfx942:64"))
        // The grown catalog is what an offline remount serves.
        let recorded = CatalogRecords(layout: node.layout).load(
            reference: NodeFixture.reference.description, selection: NodeFixture.selection.description)
        #expect(recorded?.used.map(\.name) == ["cuda-sm90", "v2"])
        // The skipped tag is not resolved again: one HEAD says it did not move.
        node.origin.script(nil)
        let before = manifestRequests("rocm").count
        #expect(refresher.refreshOnce().isEmpty)
        #expect(Array(manifestRequests("rocm").dropFirst(before)) == ["HEAD"])
    }

    @Test func aContentDerivedTagIsNeverAskedAboutAgainAndAMovedTagAddsItsNewImage() throws {
        let refresher = try refresher()
        let first = try push("probe", marker: "one")
        let derived = "fleet-cuda-sm90-\(first.digest.hex.prefix(16))"
        try node.origin.pushImage(
            repository: "org/cache", tag: derived,
            labels: [CacheLabels.tritonSummary: NodeFixture.summary, "marker": "one"],
            layers: [(Data("layer of one".utf8), MediaType.ociLayerGzip)])
        #expect(refresher.refreshOnce().map(\.name) == [derived], "the same image under two tags is added once")
        let asked = manifestRequests(derived).count
        try push("probe", marker: "two")  // the tag moves
        let added = refresher.refreshOnce()
        #expect(added.map(\.name) == ["probe"] && added[0].digest != first.digest)
        #expect(manifestRequests(derived).count == asked, "a content-derived tag is known for good")
        #expect(refresher.status.imagesAdded == 2, "the moved tag's first image stays served")
    }

    @Test func aTagThePolicyRefusedIsCheckedAgainUntilItIsSigned() throws {
        let policy = RefuseUntil()
        let refresher = try refresher(policy: policy)
        let image = try push("late-signed")
        policy.refuse(image.digest)
        #expect(refresher.refreshOnce().isEmpty)
        #expect(refresher.status.lastSkipped.first?.hasPrefix("late-signed: not signed yet") == true)
        #expect(refresher.refreshOnce().isEmpty, "still refused: checked again, not added")
        policy.accept(image.digest)
        #expect(refresher.refreshOnce().map(\.name) == ["late-signed"])
        #expect(policy.checks(of: image.digest) == 3)
    }

    @Test func aFailedListingIsCountedAndChangesNothing() throws {
        let refresher = try refresher()
        try push("v2")
        node.origin.script { $0.url.path.hasSuffix("/tags/list") ? .error(503) : nil }
        #expect(refresher.refreshOnce().isEmpty)
        #expect(refresher.status.failures == 1)
        #expect(refresher.status.lastError?.contains("503") == true)
        node.origin.script(nil)
        #expect(refresher.refreshOnce().map(\.name) == ["v2"])
        #expect(refresher.status.lastError == nil)
    }

    @Test func aTagThatCannotBeReadThisTimeIsLeftForTheNextRefresh() throws {
        let refresher = try refresher()
        try push("v2")
        node.origin.script { $0.url.path.hasSuffix("/manifests/v2") ? .error(503) : nil }
        #expect(refresher.refreshOnce().isEmpty)
        #expect(refresher.status.failures == 0, "one tag failing is not a failed refresh")
        node.origin.script(nil)
        #expect(refresher.refreshOnce().map(\.name) == ["v2"])
    }
}

/// What the refresher handed to the mount.
final class Applied: Sendable {
    private let added = Mutex<[[String]]>([])
    func record(_ names: [String]) { added.withLock { $0.append(names) } }
    var calls: [[String]] { added.withLock { $0 } }
}

/// A signature policy that refuses chosen digests, counting its checks.
final class RefuseUntil: CatalogPolicy {
    private let state = Mutex<(refused: Set<Digest>, checks: [Digest: Int])>(([], [:]))

    func refuse(_ digest: Digest) { state.withLock { _ = $0.refused.insert(digest) } }
    func accept(_ digest: Digest) { state.withLock { _ = $0.refused.remove(digest) } }
    func checks(of digest: Digest) -> Int { state.withLock { $0.checks[digest] ?? 0 } }

    func applies(to reference: ImageReference) throws -> Bool { true }

    func enforce(on catalog: inout Catalog, reference: ImageReference, client: RegistryClient?) throws {
        for i in catalog.entries.indices where catalog.entries[i].isUsed {
            let digest = catalog.entries[i].digest!
            let refused = state.withLock { state in
                state.checks[digest, default: 0] += 1
                return state.refused.contains(digest)
            }
            if refused { catalog.entries[i].skipReason = "not signed yet" }
        }
    }
}

@Suite struct CatalogRefreshTests {
    static let digest = try! Digest(parsing: "sha256:" + String(repeating: "ab", count: 32))

    @Test func tagsOfAnIndexAreKnownByTheirTag() {
        #expect(CatalogRefresh.tag(of: "multi[1]") == "multi")
        #expect(CatalogRefresh.tag(of: "cuda-sm90") == "cuda-sm90")
        #expect(CatalogRefresh.tag(of: "odd]") == "odd]")
    }

    @Test func stepsFollowWhatIsKnown() {
        let derived = "fleet-x-\(Self.digest.hex.prefix(16))"
        let entry = Catalog.Entry(
            name: derived, digest: Self.digest, mediaType: nil, image: nil, kinds: [], targets: nil, skipReason: "x")
        var refresh = CatalogRefresh(catalog: Catalog(repository: "r", reference: "r", entries: [entry]))
        #expect(refresh.step(for: derived) == .keep)
        #expect(refresh.step(for: "new") == .resolve)
        _ = refresh.absorb(tag: "mutable", digest: Self.digest, entries: [], refusedByPolicy: false)
        #expect(refresh.step(for: "mutable") == .head)
        #expect(!refresh.moved("mutable", to: Self.digest))
        #expect(refresh.moved("mutable", to: nil), "a HEAD without a digest cannot tell")
        _ = refresh.absorb(tag: derived, digest: Self.digest, entries: [], refusedByPolicy: true)
        #expect(refresh.step(for: derived) == .head, "refused by the policy: asked again")
        #expect(refresh.moved(derived, to: Self.digest))
        refresh.keepOnly(listed: ["mutable"])
        #expect(refresh.step(for: derived) == .resolve, "a tag that went and came back is new")
    }
}
