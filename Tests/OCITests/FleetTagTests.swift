import Foundation
import OCI
import Testing

@Suite struct FleetTagTests {
    let digest = try! Digest(parsing: "sha256:" + String(repeating: "3f2a9c0b", count: 8))

    @Test func aTagIsItsPrefixTargetAndDigestAndParsesBack() throws {
        let tag = FleetTag(target: "cuda-sm90", digest: digest)
        #expect(tag.description == "fleet-cuda-sm90-\(digest.hex.prefix(16))")
        let parsed = try #require(FleetTag(parsing: tag.description))
        #expect(parsed == tag)
        #expect(parsed.names(digest))
        #expect(!parsed.names(try Digest(parsing: "sha256:" + String(repeating: "0", count: 64))))
        #expect(
            FleetTag(parsing: "ci-hip-gfx942-w64-\(digest.hex.prefix(16))", prefix: "ci")?.target == "hip-gfx942-w64")
    }

    @Test func otherTagsAreNotFleetTags() {
        for tag in [
            "cuda-sm90", "fleet-cuda-sm90", "fleet--0123456789abcdef", "fleet-cuda-sm90-0123456789ABCDEF",
            "fleet-cuda-sm90-0123456789abcde", "other-cuda-sm90-0123456789abcdef", "sha256-\(digest.hex).sig",
        ] {
            #expect(FleetTag(parsing: tag) == nil, "\(tag)")
        }
    }

    @Test func prefixesFollowTheTagGrammar() {
        #expect(FleetTag.isValidPrefix("fleet"))
        #expect(FleetTag.isValidPrefix("node_a.1-x"))
        #expect(!FleetTag.isValidPrefix(""))
        #expect(!FleetTag.isValidPrefix("-x"))
        #expect(!FleetTag.isValidPrefix("a/b"))
        #expect(!FleetTag.isValidPrefix(String(repeating: "a", count: 65)))
    }

    @Test func aContentDerivedTagNamesItsDigestWhateverItsPrefix() throws {
        #expect(FleetTag.isContentDerived("ci-x-y-\(digest.hex.prefix(16))", digest: digest))
        #expect(!FleetTag.isContentDerived("cuda-sm90", digest: digest))
        #expect(!FleetTag.isContentDerived("v1-0123456789abcdef", digest: digest), "a hex suffix naming another image")
        #expect(!FleetTag.isContentDerived("fleet-\(digest.hex.prefix(15))", digest: digest))
    }

    @Test func targetNamesAddAWarpSizeOnlyWhereTwoTargetsWouldShareOne() throws {
        let sm90 = GPUTarget(backend: .cuda, arch: "90", warpSize: 32)
        let gfx64 = GPUTarget(backend: .hip, arch: "gfx942", warpSize: 64)
        let gfx32 = GPUTarget(backend: .hip, arch: "gfx942", warpSize: 32)
        let names = FleetTag.targetNames(for: [sm90, gfx64, gfx32])
        #expect(names == [sm90: "cuda-sm90", gfx64: "hip-gfx942-w64", gfx32: "hip-gfx942-w32"])
        #expect(FleetTag.split(tag: "v1", target: "cuda-sm90") == "v1-cuda-sm90")
        #expect(FleetTag.split(tag: nil, target: "cuda-sm90") == "cuda-sm90")
        #expect(FleetTag.split(tag: nil, target: nil) == "latest")
        #expect(FleetTag.split(tag: "v1", target: nil) == "v1")
    }
}
