import ContentHash
import Foundation
import OCI
import Testing
import Verification

/// The cosign vectors under `Tests/VerificationTests/Fixtures` (see its PROVENANCE.md), copied into the test bundle.
enum Fixtures {
    static func url(_ relative: String) throws -> URL {
        let root = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        return root.appending(path: relative)
    }

    static func data(_ relative: String) throws -> Data {
        try Data(contentsOf: url(relative))
    }

    static func text(_ relative: String) throws -> String {
        String(decoding: try data(relative), as: UTF8.self)
    }

    static func key(_ name: String) throws -> PublicKey {
        try PublicKey(pem: text("containers-image/\(name)"))
    }

    /// The public-good Rekor v1 log, from its PEM key.
    static func rekorLog() throws -> TrustedRoot.Log {
        TrustedRoot.Log(publicKey: try key("rekor.pub"))
    }

    /// A containers/image vector directory: its signature layer and the digest of the manifest beside it.
    static func vector(_ directory: String) throws -> (signature: CosignSignature, digest: Digest) {
        let manifest = try data("containers-image/\(directory)/manifest.json")
        let signature = try sigstoreJSON(data("containers-image/\(directory)/signature-1"))
        return (signature, SHA256Hasher.digest(manifest))
    }

    /// containers/image's on-disk signature form: `\0sigstore-json\n` then `{mimeType, payload (base64), annotations}`.
    static func sigstoreJSON(_ data: Data) throws -> CosignSignature {
        let prefix = Data("\u{0}sigstore-json\n".utf8)
        try #require(data.starts(with: prefix))
        struct Wire: Decodable {
            let mimeType: String
            let payload: String
            let annotations: [String: String]
        }
        let wire = try JSONDecoder().decode(Wire.self, from: data.dropFirst(prefix.count))
        #expect(wire.mimeType == SimpleSigningPayload.mediaType)
        return CosignSignature(payload: try #require(Data(base64Encoded: wire.payload)), annotations: wire.annotations)
    }
}

extension CosignSignature {
    /// A copy with one annotation replaced (or removed with `nil`).
    func with(_ key: String, _ value: String?) -> CosignSignature {
        var annotations = self.annotations
        annotations[key] = value
        return CosignSignature(payload: payload, annotations: annotations)
    }

    func with(payload: Data) -> CosignSignature {
        CosignSignature(payload: payload, annotations: annotations)
    }
}

extension Data {
    /// A copy with the byte at `index` (negative: from the end) XORed with `mask`.
    func flipping(at index: Int, mask: UInt8 = 0x01) -> Data {
        var copy = self
        let position = copy.startIndex + (index >= 0 ? index : count + index)
        copy[position] ^= mask
        return copy
    }
}

/// `#expect(throws:)` for typed errors, comparing the exact case.
func expectError<T>(
    _ expected: VerificationError, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) {
    do {
        _ = try body()
        Issue.record("expected \(expected), but it succeeded", sourceLocation: sourceLocation)
    } catch {
        #expect(error as? VerificationError == expected, sourceLocation: sourceLocation)
    }
}

/// Runs `body` and returns its error, failing the test when it succeeds.
func capturedError<T>(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T) -> VerificationError? {
    do {
        _ = try body()
        Issue.record("expected an error, but it succeeded", sourceLocation: sourceLocation)
        return nil
    } catch {
        let typed = error as? VerificationError
        #expect(typed != nil, "not a VerificationError: \(error)", sourceLocation: sourceLocation)
        return typed
    }
}
