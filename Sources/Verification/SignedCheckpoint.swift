import ContentHash
import Foundation

/// A transparency-log checkpoint in signed-note form, as Rekor (v1 and v2) and witnesses sign it:
/// https://github.com/C2SP/C2SP/blob/main/signed-note.md, https://github.com/C2SP/C2SP/blob/main/tlog-checkpoint.md
///
/// ```
/// log2025-1.rekor.sigstore.dev      origin
/// 736                               tree size
/// rs1YPY0ydAV0lxgfrq5pE4o...=       root hash
///                                   (optional extension lines, then a blank line)
/// — log2025-1.rekor.sigstore.dev 8w1amd...   signature: name, base64 of key hint (4 bytes) + signature
/// — witness.example.org Z/euoAAAA...         a witness cosignature (tlog-cosignature), ignored unless known
/// ```
public struct SignedCheckpoint: Sendable, Equatable {
    public struct Signature: Sendable, Equatable {
        public let name: String
        public let keyHint: Data
        public let bytes: Data
    }

    /// A witness whose cosignatures (C2SP tlog-cosignature, Ed25519) can be checked.
    public struct Witness: Sendable, Equatable {
        public let name: String
        public let publicKey: PublicKey

        public init(name: String, publicKey: PublicKey) {
            self.name = name
            self.publicKey = publicKey
        }

        /// SHA-256(name || "\n" || 0x04 || key)[:4], the cosignature key hint.
        var keyHint: Data {
            var input = Data(name.utf8)
            input.append(contentsOf: [0x0a, 0x04])
            input.append(publicKey.spki.suffix(32))
            return Data(hex: SHA256Hasher.digest(input).hex)!.prefix(4)
        }
    }

    /// A cosignature that verified: who witnessed the checkpoint, and when they say they did.
    public struct Cosignature: Sendable, Equatable {
        public let witness: String
        public let time: Date
    }

    /// At most this many signature lines are read (golang.org/x/mod/sumdb/note's limit).
    static let maxSignatures = 100

    /// The signed text: every line up to and including the one before the blank line.
    public let text: Data
    public let origin: String
    public let treeSize: Int64
    public let rootHash: Data
    public let signatures: [Signature]

    /// Parses the note and its checkpoint body.
    /// - Throws: `VerificationError.invalidInclusionProof` for anything that is not a well-formed checkpoint.
    public init(_ envelope: String) throws(VerificationError) {
        func malformed(_ why: String) -> VerificationError { .invalidInclusionProof(reason: "checkpoint \(why)") }
        guard let split = envelope.range(of: "\n\n", options: .backwards) else {
            throw malformed("has no signature block")
        }
        let body = String(envelope[..<split.lowerBound]) + "\n"
        let block = envelope[split.upperBound...]
        guard !block.isEmpty else { throw malformed("has no signatures") }
        guard block.hasSuffix("\n") else { throw malformed("signature block is not terminated") }
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        guard lines.count >= 3 else { throw malformed("body lacks an origin, a tree size or a root hash") }
        guard !lines[0].isEmpty else { throw malformed("origin is empty") }
        guard let size = Int64(lines[1]), size >= 0, lines[1].allSatisfy(\.isASCII), lines[1].first != "+",
            lines[1] == "0" || lines[1].first != "0"
        else { throw malformed("tree size '\(lines[1])' is not a decimal number") }
        guard let root = try? decodeBase64(String(lines[2]), what: "checkpoint root"), root.count == 32 else {
            throw malformed("root hash is not 32 bytes of base64")
        }
        guard !lines.dropFirst(3).contains(where: \.isEmpty) else { throw malformed("has an empty extension line") }
        var signatures: [Signature] = []
        for line in block.dropLast().split(separator: "\n", omittingEmptySubsequences: false) {
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "\u{2014}", !parts[1].isEmpty, !parts[1].contains("+"),
                let blob = try? decodeBase64(String(parts[2]), what: "checkpoint signature"), blob.count >= 5
            else { throw malformed("signature line '\(line.prefix(40))' is malformed") }
            signatures.append(Signature(name: String(parts[1]), keyHint: blob.prefix(4), bytes: blob.dropFirst(4)))
        }
        guard signatures.count <= Self.maxSignatures else { throw malformed("has too many signatures") }
        text = Data(body.utf8)
        origin = String(lines[0])
        treeSize = size
        rootHash = root
        self.signatures = signatures
    }

    /// Requires a signature by `log` (its key hint, and for Rekor v2 its name), every one of which verifies.
    /// Other lines (witness cosignatures, other keys of the same origin) are not the log's and are skipped.
    /// - Parameter origin: the origin and signer name a Rekor v2 checkpoint must have (the log's host); `nil` for a
    ///   Rekor v1 checkpoint, whose origin is `<host> - <tree ID>` and whose signature is matched by key hint.
    /// - Throws: `VerificationError.invalidInclusionProof`.
    public func verify(log: TrustedRoot.Log, origin expected: String?) throws(VerificationError) {
        if let expected, origin != expected {
            throw .invalidInclusionProof(reason: "checkpoint origin '\(origin)' is not the log's '\(expected)'")
        }
        let hint = (expected.map { log.checkpointKeyID(name: $0) } ?? log.logID).prefix(4)
        let candidates = signatures.filter { $0.keyHint == hint && (expected == nil || $0.name == expected) }
        guard !candidates.isEmpty else {
            throw .invalidInclusionProof(reason: "checkpoint is not signed by the log key")
        }
        for signature in candidates {
            guard
                (try? log.publicKey.isValidSignature(signature.bytes, over: text, hash: log.publicKey.naturalHash))
                    == true
            else { throw .invalidInclusionProof(reason: "checkpoint signature by the log does not verify") }
        }
    }

    /// The cosignatures by `witnesses` that verify: `— <name> base64(hint || u64 time || Ed25519 signature)` over
    /// `"cosignature/v1\ntime <time>\n" || text` (C2SP tlog-cosignature). Lines of unknown witnesses are ignored.
    /// - Throws: `VerificationError.invalidInclusionProof` when a known witness's line does not verify.
    public func cosignatures(by witnesses: [Witness]) throws(VerificationError) -> [Cosignature] {
        var verified: [Cosignature] = []
        for witness in witnesses {
            let hint = witness.keyHint
            for signature in signatures where signature.name == witness.name && signature.keyHint == hint {
                guard signature.bytes.count == 72 else {
                    throw .invalidInclusionProof(reason: "cosignature by \(witness.name) is not 72 bytes")
                }
                let seconds = signature.bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                var message = Data("cosignature/v1\ntime \(seconds)\n".utf8)
                message.append(text)
                guard (try? witness.publicKey.isValidSignature(Data(signature.bytes.suffix(64)), over: message)) == true
                else { throw .invalidInclusionProof(reason: "cosignature by \(witness.name) does not verify") }
                verified.append(
                    Cosignature(witness: witness.name, time: Date(timeIntervalSince1970: TimeInterval(seconds))))
            }
        }
        return verified
    }
}
