import Foundation
import Testing

@testable import Verification

/// C2SP signed notes and checkpoints: parsing rules, the log's signature, witness cosignatures.
@Suite struct SignedCheckpointTests {
    struct Witnessed: Decodable {
        let name: String
        let publicKey: String
        let checkpoint: String
    }

    static func witnessed() throws -> Witnessed {
        try JSONDecoder().decode(Witnessed.self, from: Fixtures.data("test-pki/witness.json"))
    }

    static func log() throws -> TrustedRoot.Log {
        try #require(try RekorV2Tests.root().transparencyLogs.first { $0.publicKey.algorithm == .ed25519 })
    }

    @Test func logSignatureAndCosignature() throws {
        let fixture = try Self.witnessed()
        let checkpoint = try SignedCheckpoint(fixture.checkpoint)
        let log = try Self.log()
        #expect(checkpoint.origin == log.origin)
        #expect(checkpoint.signatures.count == 2)
        try checkpoint.verify(log: log, origin: log.origin)
        let witness = SignedCheckpoint.Witness(
            name: fixture.name, publicKey: try PublicKey(spki: try #require(Data(base64Encoded: fixture.publicKey))))
        let cosignatures = try checkpoint.cosignatures(by: [witness])
        #expect(cosignatures.map(\.witness) == [fixture.name])
        #expect(cosignatures[0].time.timeIntervalSinceNow < 600)
        // A witness the verifier does not know is no cosignature, and no error either.
        let stranger = SignedCheckpoint.Witness(name: "other.example", publicKey: witness.publicKey)
        #expect(try checkpoint.cosignatures(by: [stranger]).isEmpty)
    }

    @Test func alteredCosignatureFails() throws {
        let fixture = try Self.witnessed()
        let lines = fixture.checkpoint.split(separator: "\n", omittingEmptySubsequences: false)
        let witnessLine = try #require(lines.firstIndex { $0.hasPrefix("\u{2014} \(fixture.name) ") })
        var parts = lines[witnessLine].split(separator: " ")
        var blob = try #require(Data(base64Encoded: String(parts[2])))
        blob[blob.count - 1] ^= 1
        parts[2] = Substring(blob.base64EncodedString())
        var edited = lines
        edited[witnessLine] = Substring(parts.joined(separator: " "))
        let checkpoint = try SignedCheckpoint(edited.joined(separator: "\n"))
        let witness = SignedCheckpoint.Witness(
            name: fixture.name, publicKey: try PublicKey(spki: try #require(Data(base64Encoded: fixture.publicKey))))
        expectError(.invalidInclusionProof(reason: "cosignature by \(fixture.name) does not verify")) {
            try checkpoint.cosignatures(by: [witness])
        }
        // The log's own signature is untouched.
        try checkpoint.verify(log: try Self.log(), origin: try Self.log().origin)
    }

    @Test func originAndSignerNameMustBeTheLogs() throws {
        let fixture = try Self.witnessed()
        let log = try Self.log()
        expectError(
            .invalidInclusionProof(reason: "checkpoint origin '\(log.origin)' is not the log's 'other.example'")
        ) {
            try SignedCheckpoint(fixture.checkpoint).verify(log: log, origin: "other.example")
        }
        // Only the witness signature left: the log did not sign.
        let body = fixture.checkpoint.components(separatedBy: "\n\n")[0]
        let witnessOnly = fixture.checkpoint.components(separatedBy: "\n").filter { $0.hasPrefix("\u{2014} witness") }
        let unsigned = try SignedCheckpoint(body + "\n\n" + witnessOnly.joined(separator: "\n") + "\n")
        expectError(.invalidInclusionProof(reason: "checkpoint is not signed by the log key")) {
            try unsigned.verify(log: log, origin: log.origin)
        }
    }

    @Test(arguments: [
        ("no blank line", "origin\n1\nAAAA\n— origin AAAAAAAA\n"),
        ("no signatures", "origin\n1\n\(String(repeating: "A", count: 43))=\n\n"),
        ("unterminated", "origin\n1\n\(String(repeating: "A", count: 43))=\n\n— origin AAAAAAAA"),
        ("leading zero", "origin\n01\n\(String(repeating: "A", count: 43))=\n\n— origin AAAAAAAA\n"),
        ("plus sign", "origin\n+1\n\(String(repeating: "A", count: 43))=\n\n— origin AAAAAAAA\n"),
        ("short root", "origin\n1\nAAAA\n\n— origin AAAAAAAA\n"),
        ("missing size", "origin\n\(String(repeating: "A", count: 43))=\n\n— origin AAAAAAAA\n"),
        ("empty origin", "\n1\n\(String(repeating: "A", count: 43))=\n\n— origin AAAAAAAA\n"),
        ("bad signature line", "origin\n1\n\(String(repeating: "A", count: 43))=\n\n- origin AAAAAAAA\n"),
        ("short signature", "origin\n1\n\(String(repeating: "A", count: 43))=\n\n— origin AAAA\n"),
    ])
    func malformedNotesAreRefused(_ why: String, _ text: String) {
        #expect(throws: VerificationError.self, "\(why)") { try SignedCheckpoint(text) }
    }

    @Test func extensionLinesAreSigned() throws {
        let root = String(repeating: "A", count: 43) + "="
        let checkpoint = try SignedCheckpoint("origin\n7\n\(root)\nTimestamp: 1\n\n— origin AAAAAAAA\n")
        #expect(checkpoint.treeSize == 7)
        #expect(String(decoding: checkpoint.text, as: UTF8.self) == "origin\n7\n\(root)\nTimestamp: 1\n")
    }
}
