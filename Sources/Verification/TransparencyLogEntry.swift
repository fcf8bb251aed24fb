import ContentHash
import Foundation

/// A Rekor v1 entry as a Sigstore bundle carries it: the canonical body, its SET (inclusion promise) and, from
/// bundle v0.2 on, a Merkle inclusion proof with a signed checkpoint.
public struct TransparencyLogEntry: Sendable, Equatable {
    /// An RFC 6962 / RFC 9162 inclusion proof.
    public struct InclusionProof: Sendable, Equatable {
        public let logIndex: Int64
        public let treeSize: Int64
        public let rootHash: Data
        public let hashes: [Data]
        /// The signed-note checkpoint text, when present.
        public let checkpoint: String?
    }

    public let logIndex: Int64
    public let logID: Data
    public let kind: String
    public let version: String
    public let integratedTime: Int64?
    public let signedEntryTimestamp: Data?
    /// The base64 of the canonical body, exactly as carried (what the SET signs).
    public let canonicalizedBodyBase64: String
    public let canonicalizedBody: Data
    public let inclusionProof: InclusionProof?

    init(_ wire: SigstoreBundle.Wire.Entry) throws(VerificationError) {
        guard let index = Int64(wire.logIndex) else {
            throw .malformed(what: "transparency log entry", reason: "logIndex '\(wire.logIndex)'")
        }
        logIndex = index
        logID = try decodeBase64(wire.logId.keyId, what: "transparency log ID")
        kind = wire.kindVersion.kind
        version = wire.kindVersion.version
        integratedTime = wire.integratedTime.flatMap { Int64($0) }
        signedEntryTimestamp = try wire.inclusionPromise.map {
            (promise) throws(VerificationError) in try decodeBase64(promise.signedEntryTimestamp, what: "SET")
        }
        canonicalizedBodyBase64 = wire.canonicalizedBody
        canonicalizedBody = try decodeBase64(wire.canonicalizedBody, what: "transparency log entry body")
        if let proof = wire.inclusionProof {
            guard let proofIndex = Int64(proof.logIndex), let size = Int64(proof.treeSize) else {
                throw .malformed(what: "inclusion proof", reason: "index or size is not a number")
            }
            var hashes: [Data] = []
            for hash in proof.hashes { hashes.append(try decodeBase64(hash, what: "inclusion proof hash")) }
            inclusionProof = InclusionProof(
                logIndex: proofIndex, treeSize: size, rootHash: try decodeBase64(proof.rootHash, what: "root hash"),
                hashes: hashes, checkpoint: proof.checkpoint?.envelope)
        } else {
            inclusionProof = nil
        }
    }

    /// The SET check of a legacy `dev.sigstore.cosign/bundle` applies unchanged: same signed fields.
    var rekorBundle: RekorBundle? {
        guard let signedEntryTimestamp, let integratedTime else { return nil }
        return RekorBundle(
            signedEntryTimestamp: signedEntryTimestamp, body: canonicalizedBodyBase64, integratedTime: integratedTime,
            logIndex: logIndex, logID: logID.hexString)
    }

    /// Verifies the inclusion proof: the body's leaf hash reaches `rootHash`, and the checkpoint (when present) is
    /// signed by `log` and names the same tree size and root.
    /// - Throws: `VerificationError.invalidSET` (the proof is the log's other promise of inclusion).
    public func verifyInclusionProof(log: TrustedRoot.Log) throws(VerificationError) {
        guard let proof = inclusionProof else { throw .invalidSET(reason: "entry has no inclusion proof") }
        var leafInput = Data([0x00])
        leafInput.append(canonicalizedBody)
        let computed = try Merkle.rootFromInclusionProof(
            leaf: Merkle.hash(leafInput), index: proof.logIndex, size: proof.treeSize, proof: proof.hashes)
        guard computed == proof.rootHash else {
            throw .invalidSET(reason: "inclusion proof does not lead to the root hash")
        }
        if let checkpoint = proof.checkpoint {
            let note = try SignedCheckpoint(checkpoint)
            try note.verify(log: log)
            guard note.treeSize == proof.treeSize, note.rootHash == proof.rootHash else {
                throw .invalidSET(reason: "checkpoint names another tree than the inclusion proof")
            }
        }
    }
}

/// RFC 9162 §2.1 Merkle tree hashing with SHA-256.
enum Merkle {
    static func hash(_ data: Data) -> Data { Data(hex: SHA256Hasher.digest(data).hex)! }

    static func node(_ left: Data, _ right: Data) -> Data {
        var input = Data([0x01])
        input.append(left)
        input.append(right)
        return hash(input)
    }

    /// RFC 9162 §2.1.3.2: the root an inclusion proof leads to.
    static func rootFromInclusionProof(leaf: Data, index: Int64, size: Int64, proof: [Data]) throws(VerificationError)
        -> Data
    {
        guard index >= 0, index < size else { throw .invalidSET(reason: "inclusion proof index outside the tree") }
        var fn = index
        var sn = size - 1
        var root = leaf
        for sibling in proof {
            guard sn != 0 else { throw .invalidSET(reason: "inclusion proof is too long") }
            if fn & 1 == 1 || fn == sn {
                root = node(sibling, root)
                while fn & 1 == 0 && fn != 0 {
                    fn >>= 1
                    sn >>= 1
                }
            } else {
                root = node(root, sibling)
            }
            fn >>= 1
            sn >>= 1
        }
        guard sn == 0 else { throw .invalidSET(reason: "inclusion proof is too short") }
        return root
    }
}

/// A transparency-log checkpoint in signed-note form:
/// https://github.com/transparency-dev/formats/blob/main/log/README.md
struct SignedCheckpoint {
    let text: Data
    let origin: String
    let treeSize: Int64
    let rootHash: Data
    let signatures: [(name: String, keyHint: Data, signature: Data)]

    init(_ envelope: String) throws(VerificationError) {
        guard let split = envelope.range(of: "\n\n") else { throw .invalidSET(reason: "checkpoint has no signatures") }
        let body = String(envelope[..<split.lowerBound]) + "\n"
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        guard lines.count >= 3, let size = Int64(lines[1]),
            let root = try? decodeBase64(String(lines[2]), what: "checkpoint root")
        else { throw .invalidSET(reason: "checkpoint body is malformed") }
        text = Data(body.utf8)
        origin = String(lines[0])
        treeSize = size
        rootHash = root
        var signatures: [(String, Data, Data)] = []
        for line in envelope[split.upperBound...].split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 3, parts[0] == "\u{2014}",
                let blob = try? decodeBase64(String(parts[2]), what: "checkpoint signature"), blob.count > 4
            else { throw .invalidSET(reason: "checkpoint signature line is malformed") }
            signatures.append((String(parts[1]), blob.prefix(4), blob.dropFirst(4)))
        }
        self.signatures = signatures
    }

    /// One signature whose key hint is the first four bytes of the log ID must verify with the log key.
    func verify(log: TrustedRoot.Log) throws(VerificationError) {
        let hint = log.logID.prefix(4)
        for signature in signatures where signature.keyHint == hint {
            if (try? log.publicKey.isValidSignature(Data(signature.signature), over: text)) == true { return }
        }
        throw .invalidSET(reason: "checkpoint is not signed by the log key")
    }
}
