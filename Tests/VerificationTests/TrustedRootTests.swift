import Foundation
import Testing
import Verification

@Suite struct TrustedRootTests {
    @Test func bundledRootIsTheFixture() throws {
        let bundled = try TrustedRoot.publicGood()
        let fixture = try TrustedRoot(json: Fixtures.data("public-good-trusted-root/trusted_root.json"))
        #expect(bundled == fixture)
        #expect(TrustedRoot.publicGoodJSON == (try Fixtures.data("public-good-trusted-root/trusted_root.json")))
    }

    @Test func publicGoodContents() throws {
        let root = try TrustedRoot.publicGood()
        #expect(root.certificateAuthorities.count == 2)
        #expect(root.certificateAuthorities.map(\.chain.count) == [1, 2])
        #expect(root.certificateAuthorities[1].chain.last?.subject == "CN=sigstore,O=sigstore.dev")
        // Rekor v1 (ECDSA, ID = sha256 of its SPKI) and Rekor v2 (Ed25519) are both usable.
        let rekor = try #require(root.transparencyLogs.first)
        #expect(rekor.publicKey == (try Fixtures.key("rekor.pub")))
        #expect(rekor.logID == TrustedRoot.Log(publicKey: rekor.publicKey).logID)
        #expect(root.transparencyLogs.contains { $0.publicKey.algorithm == .ed25519 })
        #expect(!root.certificateTransparencyLogs.isEmpty)
        let first = root.certificateAuthorities[0].validity
        #expect(first.end == Date(timeIntervalSince1970: 1_672_531_199.999))
        // Rekor v2's log ID is its C2SP checkpoint key ID, named by its host; the TSA cosign v3 uses is there.
        let rekorV2 = try #require(root.transparencyLogs.first { $0.publicKey.algorithm == .ed25519 })
        #expect(rekorV2.origin == "log2025-1.rekor.sigstore.dev")
        #expect(rekorV2.checkpointKeyID(name: rekorV2.origin) == rekorV2.logID)
        #expect(root.timestampAuthorities.map(\.uri) == ["https://timestamp.sigstore.dev/api/v1/timestamp"])
        #expect(root.timestampAuthorities[0].validity.end == nil)
    }

    @Test func refusesGarbage() {
        #expect(throws: VerificationError.self) { try TrustedRoot(json: Data("{\"tlogs\":3}".utf8)) }
    }
}
