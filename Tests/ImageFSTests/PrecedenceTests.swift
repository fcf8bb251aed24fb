import ContentHash
import Foundation
import OCI
import Testing

@testable import ImageFS

/// The precedence rule alone: which image gives a KEY, and which other images are reported (issue 21, break 5).
@Suite struct PrecedenceTests {
    func image(_ name: String, digest seed: String? = nil) -> CacheImage {
        CacheImage(name: name, digest: SHA256Hasher.digest(Data((seed ?? name).utf8)), layers: [], labels: [:])
    }

    func file(_ text: String) -> LayerFile {
        LayerFile(kind: .file(SHA256Hasher.digest(Data(text.utf8))), permissions: 0o644, size: 1, modified: 0)
    }

    let directory = LayerFile(kind: .directory, permissions: 0o755, size: 0, modified: 0)

    /// Ranks as a mount's base images (each its own) and one batch of node images (`peers`).
    static let base = Precedence.Rank(tier: .base, batch: 0, position: 0)
    static let peers = Precedence.Rank(tier: .added, batch: 0, position: 0)
    static let refreshed = Precedence.Rank(tier: .added, batch: 1, position: 0)

    func claim(
        _ ownership: inout KeyOwnership, _ files: [String: LayerFile], image: String, rank: Precedence.Rank = base
    ) -> (taken: [String: LayerFile], conflicts: [KeyOwnership.Conflict]) {
        ownership.claim([KeyOwnership.Claimant(image: image, rank: rank, files: files)])
    }

    @Test func nodePublishedTagsAreKnownByTheirShapeAlone() {
        #expect(FleetTag.isNodePublished("fleet-cuda-sm90-3f2a9c0b7d1e4a56"))
        #expect(FleetTag.isNodePublished("0-0000000000000000"), "any prefix: the shape is what counts")
        #expect(!FleetTag.isNodePublished("0"))
        #expect(!FleetTag.isNodePublished("cuda-sm90"))
        #expect(!FleetTag.isNodePublished("fleet-cuda-sm90-3F2A9C0B7D1E4A56"))
        #expect(!FleetTag.isNodePublished("fleet-cuda-sm90-3f2a9c0b7d1e4a5"))
    }

    @Test func baseImagesInTagOrderThenNodeImagesByDigestThenEachRefreshsBatch() {
        let base0 = Precedence(of: image("0"), position: 0, batch: 0)
        let base1 = Precedence(of: image("cuda-sm90"), position: 2, batch: 0)
        // A node image's tag sorts first ("0-..."), its digest decides among node images, never before a base one.
        let node = Precedence(of: image("0-0000000000000000", digest: "x"), position: 1, batch: 0)
        let otherNode = Precedence(of: image("fleet-cuda-sm90-ffffffffffffffff", digest: "y"), position: 3, batch: 0)
        // A tag a refresh found ranks after all of them, base-shaped name or not.
        let refreshed = Precedence(of: image("00"), position: 0, batch: 1)
        let later = Precedence(of: image("000"), position: 0, batch: 2)
        #expect(base0.tier == .base && base1.tier == .base)
        #expect(node.tier == .added && refreshed.tier == .added)
        let byDigest = [node, otherNode].sorted { $0.digest < $1.digest }
        #expect(
            [later, refreshed, otherNode, base1, node, base0].sorted() == [base0, base1] + byDigest + [
                refreshed, later,
            ])
        #expect(Precedence.Rank.last > later.rank)
        // Ranks: each base image alone; a batch's node images together, whatever their digests.
        #expect(base0.rank < base1.rank && base1.rank < node.rank)
        #expect(node.rank == otherNode.rank && node != otherNode)
        #expect(refreshed.rank < later.rank)
    }

    @Test func keysAreTopLevelNamesOrVLLMHashDirectories() {
        #expect(Precedence.key(of: "KEY") == "KEY")
        #expect(Precedence.key(of: "KEY/add.cubin") == "KEY")
        #expect(Precedence.key(of: "torch_compile_cache") == nil)
        #expect(Precedence.key(of: "torch_compile_cache/h1") == "torch_compile_cache/h1")
        #expect(Precedence.key(of: "torch_compile_cache/h1/rank_0_0/x.py") == "torch_compile_cache/h1")
        #expect(Precedence.key(of: "torch_compile_cache/torch_aot_compile") == nil)
        #expect(
            Precedence.key(of: "torch_compile_cache/torch_aot_compile/h2") == "torch_compile_cache/torch_aot_compile/h2"
        )
        #expect(
            Precedence.key(of: "torch_compile_cache/torch_aot_compile/h2/rank_0_0/model")
                == "torch_compile_cache/torch_aot_compile/h2")
    }

    @Test func theFirstImageGivesAKeyWholeAndOthersAddNothingUnderIt() {
        var ownership = KeyOwnership()
        let first = claim(&ownership, ["K": directory, "K/a": file("a")], image: "base")
        #expect(first.taken.keys.sorted() == ["K", "K/a"])
        #expect(first.conflicts.isEmpty)
        // The same bytes (another directory entry aside) elsewhere: nothing taken, nothing to report.
        let same = claim(&ownership, ["K/a": file("a")], image: "copy")
        #expect(same.taken.isEmpty && same.conflicts.isEmpty)
        // Other bytes, or a file more: nothing taken, reported.
        let other = claim(&ownership, ["K/a": file("evil")], image: "0")
        #expect(other.taken.isEmpty)
        #expect(other.conflicts == [KeyOwnership.Conflict(key: "K", served: "base", other: "0")])
        let extra = claim(&ownership, ["K/a": file("a"), "K/b": file("b"), "NEW/n": file("n")], image: "fleet")
        #expect(extra.taken.keys.sorted() == ["NEW/n"], "a new KEY is added")
        #expect(extra.conflicts.map(\.key) == ["K"])
    }

    @Test func peersWithDifferentBytesForAKeyWithholdItForGoodAndAreReported() {
        var ownership = KeyOwnership()
        // Two node images of one batch (in digest order), and a third agreeing with the first: no order between
        // them that a publisher could not choose, so neither copy is served.
        let peers = ownership.claim([
            .init(image: "fleet-1", rank: Self.peers, files: ["K": directory, "K/a": file("a"), "A/x": file("x")]),
            .init(image: "fleet-2", rank: Self.peers, files: ["K/a": file("evil"), "E/y": file("y")]),
            .init(image: "fleet-3", rank: Self.peers, files: ["K/a": file("a")]),
        ])
        #expect(peers.taken.keys.sorted() == ["A/x", "E/y"], "their other KEYs are given")
        #expect(peers.conflicts == [KeyOwnership.Conflict(key: "K", withheld: "fleet-1", other: "fleet-2")])
        #expect(peers.conflicts[0].served == nil)
        #expect(
            "\(peers.conflicts[0])" == "KEY K: withheld, fleet-1 and fleet-2 rank alike and hold different bytes for it"
        )
        // A later image (a refresh, another push of either) never gives a withheld KEY.
        let later = claim(&ownership, ["K/a": file("a")], image: "fleet-4", rank: Self.refreshed)
        #expect(later.taken.isEmpty && later.conflicts.isEmpty)
    }

    @Test func peersWithTheSameBytesGiveTheKeyFromTheFirstByDigest() {
        var ownership = KeyOwnership()
        let copies = ownership.claim([
            .init(image: "fleet-1", rank: Self.peers, files: ["K": directory, "K/a": file("a")]),
            .init(image: "fleet-2", rank: Self.peers, files: ["K/a": file("a")]),
        ])
        #expect(copies.taken.keys.sorted() == ["K", "K/a"])
        #expect(copies.conflicts.isEmpty)
        #expect(ownership.holders.count == 1)
        if case .owned(let image, _)? = ownership.holders["K"] { #expect(image == "fleet-1") } else { Issue.record() }
    }

    @Test func anEarlierRankKeepsItsKeyWhateverItsLaterPeersHold() {
        var ownership = KeyOwnership()
        let claimed = ownership.claim([
            .init(image: "cuda-sm90", rank: Self.base, files: ["K/a": file("a")]),
            .init(image: "fleet-1", rank: Self.peers, files: ["K/a": file("evil")]),
            .init(image: "fleet-2", rank: Self.peers, files: ["K/a": file("evil 2")]),
            .init(image: "fleet-3", rank: Self.peers, files: ["K/a": file("a")]),
        ])
        #expect(claimed.taken == ["K/a": file("a")])
        #expect(
            claimed.conflicts == [
                .init(key: "K", served: "cuda-sm90", other: "fleet-1"),
                .init(key: "K", served: "cuda-sm90", other: "fleet-2"),
            ])
    }

    @Test func aPeerThatArrivesAfterTheKeyWasServedChangesNothing() {
        // A peer that was still loading when the KEY was resolved (past the lookup's deadline): what could have
        // been served stays; the other bytes are reported.
        var ownership = KeyOwnership()
        _ = claim(&ownership, ["K/a": file("a")], image: "fleet-1", rank: Self.peers)
        let late = claim(&ownership, ["K/a": file("evil")], image: "fleet-2", rank: Self.peers)
        #expect(late.taken.isEmpty)
        #expect(late.conflicts == [.init(key: "K", served: "fleet-1", other: "fleet-2")])
    }

    @Test func groupFilesMayNameOtherRootsWithoutAConflict() {
        var ownership = KeyOwnership()
        _ = claim(&ownership, ["K/__grp__add.json": file("/root/.triton/cache"), "K/add.cubin": file("c")], image: "a")
        let relocated = claim(
            &ownership,
            ["K/__grp__add.json": file("/home/x/cache"), "K/add.cubin": file("c")], image: "b")
        #expect(relocated.conflicts.isEmpty)
    }

    @Test func vllmImagesShareTheirRootAndOwnEachHashDirectory() {
        var ownership = KeyOwnership()
        let a = claim(
            &ownership,
            ["torch_compile_cache": directory, "torch_compile_cache/h1/x": file("a1")], image: "a")
        #expect(a.taken.keys.sorted() == ["torch_compile_cache", "torch_compile_cache/h1/x"])
        let b = claim(
            &ownership,
            [
                "torch_compile_cache": directory, "torch_compile_cache/h1/x": file("b1"),
                "torch_compile_cache/h2/x": file("b2"),
            ], image: "b")
        #expect(b.taken.keys.sorted() == ["torch_compile_cache", "torch_compile_cache/h2/x"])
        #expect(b.conflicts.map(\.key) == ["torch_compile_cache/h1"])
    }

    @Test func peersWithDifferentAOTHashesEachGiveTheirHashDirectory() {
        var ownership = KeyOwnership()
        let aot = "torch_compile_cache/torch_aot_compile"
        func image(_ hash: String, _ text: String) -> KeyOwnership.Claimant {
            KeyOwnership.Claimant(
                image: "\(hash)-\(text)", rank: Self.peers,
                files: [
                    "torch_compile_cache": directory, aot: directory, "\(aot)/\(hash)/rank_0_0/model": file(text),
                ])
        }
        // One rank: the shared AOT directory is not a KEY two hashes disagree on.
        let taken = ownership.claim([image("h1", "one"), image("h2", "two")])
        #expect(taken.conflicts.isEmpty)
        #expect(
            taken.taken.keys.sorted() == [
                "torch_compile_cache", aot, "\(aot)/h1/rank_0_0/model", "\(aot)/h2/rank_0_0/model",
            ])
        // One hash with other bytes in the same rank is withheld and reported.
        var fresh = KeyOwnership()
        let clash = fresh.claim([image("h1", "one"), image("h1", "evil")])
        #expect(clash.taken.keys.sorted() == ["torch_compile_cache", aot])
        #expect(clash.conflicts.map(\.key) == ["\(aot)/h1"])
    }
}
