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
        #expect(Precedence.last > later)
    }

    @Test func keysAreTopLevelNamesOrVLLMHashDirectories() {
        #expect(Precedence.key(of: "KEY") == "KEY")
        #expect(Precedence.key(of: "KEY/add.cubin") == "KEY")
        #expect(Precedence.key(of: "torch_compile_cache") == nil)
        #expect(Precedence.key(of: "torch_compile_cache/h1") == "torch_compile_cache/h1")
        #expect(Precedence.key(of: "torch_compile_cache/h1/rank_0_0/x.py") == "torch_compile_cache/h1")
    }

    @Test func theFirstImageGivesAKeyWholeAndOthersAddNothingUnderIt() {
        var ownership = KeyOwnership()
        let first = ownership.claim(["K": directory, "K/a": file("a")], image: "base")
        #expect(first.taken.keys.sorted() == ["K", "K/a"])
        #expect(first.conflicts.isEmpty)
        // The same bytes (another directory entry aside) elsewhere: nothing taken, nothing to report.
        let same = ownership.claim(["K/a": file("a")], image: "copy")
        #expect(same.taken.isEmpty && same.conflicts.isEmpty)
        // Other bytes, or a file more: nothing taken, reported.
        let other = ownership.claim(["K/a": file("evil")], image: "0")
        #expect(other.taken.isEmpty)
        #expect(other.conflicts == [KeyOwnership.Conflict(key: "K", served: "base", other: "0")])
        let extra = ownership.claim(["K/a": file("a"), "K/b": file("b"), "NEW/n": file("n")], image: "fleet")
        #expect(extra.taken.keys.sorted() == ["NEW/n"], "a new KEY is added")
        #expect(extra.conflicts.map(\.key) == ["K"])
    }

    @Test func groupFilesMayNameOtherRootsWithoutAConflict() {
        var ownership = KeyOwnership()
        _ = ownership.claim(["K/__grp__add.json": file("/root/.triton/cache"), "K/add.cubin": file("c")], image: "a")
        let relocated = ownership.claim(
            ["K/__grp__add.json": file("/home/x/cache"), "K/add.cubin": file("c")], image: "b")
        #expect(relocated.conflicts.isEmpty)
    }

    @Test func vllmImagesShareTheirRootAndOwnEachHashDirectory() {
        var ownership = KeyOwnership()
        let a = ownership.claim(
            ["torch_compile_cache": directory, "torch_compile_cache/h1/x": file("a1")], image: "a")
        #expect(a.taken.keys.sorted() == ["torch_compile_cache", "torch_compile_cache/h1/x"])
        let b = ownership.claim(
            [
                "torch_compile_cache": directory, "torch_compile_cache/h1/x": file("b1"),
                "torch_compile_cache/h2/x": file("b2"),
            ], image: "b")
        #expect(b.taken.keys.sorted() == ["torch_compile_cache", "torch_compile_cache/h2/x"])
        #expect(b.conflicts.map(\.key) == ["torch_compile_cache/h1"])
    }
}
