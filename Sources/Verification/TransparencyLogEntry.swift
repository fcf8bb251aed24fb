import ContentHash
import Foundation

/// A transparency-log entry as a Sigstore bundle carries it: the canonical body, and the log's evidence that it
/// holds it. A Rekor v1 entry has a signed entry timestamp (SET: a promise, with the time it was integrated) and,
/// from bundle v0.2 on, an inclusion proof. A Rekor v2 entry (`hashedrekord`/`dsse` 0.0.2) has only the proof: a
/// Merkle path to a root the log signed as a checkpoint, and no time at all.
public struct TransparencyLogEntry: Sendable, Equatable {
    /// An RFC 6962 / RFC 9162 inclusion proof and the signed checkpoint it leads to.
    public struct InclusionProof: Sendable, Equatable {
        public let logIndex: Int64
        public let treeSize: Int64
        public let rootHash: Data
        public let hashes: [Data]
        /// The signed-note checkpoint text.
        public let checkpoint: String
    }

    public let logIndex: Int64
    public let logID: Data
    public let kind: String
    public let version: String
    /// Unsigned on its own: it counts only when a verified SET covers it.
    public let integratedTime: Int64?
    public let signedEntryTimestamp: Data?
    /// The base64 of the canonical body, exactly as carried (what the SET signs).
    public let canonicalizedBodyBase64: String
    public let canonicalizedBody: Data
    public let inclusionProof: InclusionProof?

    /// Rekor v2 (rekor-tiles) writes only these two types, at version 0.0.2; `intoto` 0.0.2 is a Rekor v1 type.
    public var isRekorV2: Bool { version == "0.0.2" && (kind == "hashedrekord" || kind == "dsse") }

    init(_ wire: SigstoreBundle.Wire.Entry) throws(VerificationError) {
        guard wire.logIndex.value >= 0 else {
            throw .malformed(what: "transparency log entry", reason: "negative logIndex \(wire.logIndex.value)")
        }
        logIndex = wire.logIndex.value
        logID = try decodeBase64(wire.logId.keyId, what: "transparency log ID")
        kind = wire.kindVersion.kind
        version = wire.kindVersion.version
        integratedTime = wire.integratedTime.map(\.value).flatMap { $0 == 0 ? nil : $0 }
        signedEntryTimestamp = try wire.inclusionPromise.map {
            (promise) throws(VerificationError) in try decodeBase64(promise.signedEntryTimestamp, what: "SET")
        }
        canonicalizedBodyBase64 = wire.canonicalizedBody
        canonicalizedBody = try decodeBase64(wire.canonicalizedBody, what: "transparency log entry body")
        if let proof = wire.inclusionProof {
            guard proof.logIndex.value >= 0, proof.treeSize.value > proof.logIndex.value else {
                throw .malformed(what: "inclusion proof", reason: "index outside the tree")
            }
            guard let checkpoint = proof.checkpoint?.envelope, !checkpoint.isEmpty else {
                throw .malformed(what: "inclusion proof", reason: "no checkpoint")
            }
            guard let root = proof.rootHash else { throw .malformed(what: "inclusion proof", reason: "no root hash") }
            var hashes: [Data] = []
            for hash in proof.hashes ?? [] { hashes.append(try decodeBase64(hash, what: "inclusion proof hash")) }
            inclusionProof = InclusionProof(
                logIndex: proof.logIndex.value, treeSize: proof.treeSize.value,
                rootHash: try decodeBase64(root, what: "inclusion proof root hash"), hashes: hashes,
                checkpoint: checkpoint)
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

    /// Verifies the inclusion proof: the body's leaf hash reaches the proof's root, a checkpoint signed by `log`
    /// names that root and tree size, and, for Rekor v2, the checkpoint's origin is the log's (a Rekor v1
    /// checkpoint's origin carries a tree ID instead).
    /// - Throws: `VerificationError.invalidInclusionProof`.
    public func verifyInclusionProof(log: TrustedRoot.Log) throws(VerificationError) {
        guard let proof = inclusionProof else { throw .invalidInclusionProof(reason: "entry has no inclusion proof") }
        if isRekorV2, proof.logIndex != logIndex {
            throw .invalidInclusionProof(reason: "proof is for index \(proof.logIndex), the entry is \(logIndex)")
        }
        var leafInput = Data([0x00])
        leafInput.append(canonicalizedBody)
        let computed = try Merkle.rootFromInclusionProof(
            leaf: Merkle.hash(leafInput), index: proof.logIndex, size: proof.treeSize, proof: proof.hashes)
        guard computed == proof.rootHash else {
            throw .invalidInclusionProof(reason: "inclusion proof does not lead to the root hash")
        }
        let checkpoint = try SignedCheckpoint(proof.checkpoint)
        try checkpoint.verify(log: log, origin: isRekorV2 ? log.origin : nil)
        guard checkpoint.treeSize == proof.treeSize, checkpoint.rootHash == proof.rootHash else {
            throw .invalidInclusionProof(reason: "checkpoint names another tree than the inclusion proof")
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
        guard index >= 0, index < size else {
            throw .invalidInclusionProof(reason: "inclusion proof index outside the tree")
        }
        var fn = index
        var sn = size - 1
        var root = leaf
        for sibling in proof {
            guard sn != 0 else { throw .invalidInclusionProof(reason: "inclusion proof is too long") }
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
        guard sn == 0 else { throw .invalidInclusionProof(reason: "inclusion proof is too short") }
        return root
    }
}
