import OCI
import Verification

extension Catalog {
    /// Verifies the signature of every image the mount would use, on the digest pinned in this catalog (so a tag
    /// moved later changes nothing), and turns each image without a valid signature into a skipped one whose reason
    /// says why. An image listed by an index is also trusted when the index digest is validly signed: the index
    /// names the image's digest, so its signature covers it.
    /// - Parameter verify: checks one digest (`ImageVerifier.verify`); called once per distinct digest.
    /// - Returns: the entries refused by this call, with their reasons.
    @discardableResult
    public mutating func enforce(_ policy: TrustPolicy, verify: (Digest) -> Verdict) -> [Entry] {
        var verdicts: [Digest: Verdict] = [:]
        func verdict(_ digest: Digest) -> Verdict {
            if let known = verdicts[digest] { return known }
            let fresh = verify(digest)
            verdicts[digest] = fresh
            return fresh
        }
        var refused: [Entry] = []
        for i in entries.indices where entries[i].isUsed {
            guard let digest = entries[i].digest else { continue }
            var result = verdict(digest)
            if !result.isTrusted, let index = entries[i].indexDigest {
                let parent = verdict(index)
                if parent.isTrusted {
                    result = parent
                } else {
                    result.rejected += parent.rejected.map {
                        Verdict.Rejected(layout: $0.layout, reason: "index \(index.short): \($0.reason)")
                    }
                }
            }
            if result.isTrusted {
                // A signer who signed in both layouts is listed once.
                var signers: [String] = []
                for signer in result.accepted.map(\.signature.signer.description) where !signers.contains(signer) {
                    signers.append(signer)
                }
                entries[i].signedBy = signers
            } else {
                entries[i].skipReason = "signature policy (\(policy)) not met: \(result)"
                refused.append(entries[i])
            }
        }
        return refused
    }
}
