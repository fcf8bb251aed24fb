import ContentHash
import Foundation
import OCI
import Registry
import Verification

/// Writes legacy-layout signatures as `cosign sign --key --tlog-upload=false` does: the signature image at tag
/// `sha256-<hex>.sig` gains one simple-signing layer, keeping the signatures already there.
public struct CosignSigner: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// The `.sig` image now has this many signatures, the new one last.
        case appended(signatureManifest: Digest, signatures: Int)
        /// An equal signature by the same key was already there (cosign's duplicate detection); nothing was pushed.
        case alreadySigned
    }

    private let client: RegistryClient
    private let repository: String

    public init(client: RegistryClient, repository: String) {
        self.client = client
        self.repository = repository
    }

    /// Signs `digest`.
    /// - Parameters:
    ///   - reference: the payload's `docker-reference` (cosign writes the repository, `registry/name`).
    ///   - annotations: `-a key=value` pairs for the payload's `optional` map.
    public func sign(digest: Digest, reference: String, annotations: [String: String], key: PrivateKey) throws
        -> Outcome
    {
        let signature = try CosignSignature.sign(
            digest: digest, reference: reference, annotations: annotations, key: key)
        let tag = CosignSignature.signatureTag(for: digest)
        // Only an absent tag means "no signatures yet". Any other failure (a missing config or payload blob
        // included) stops here: starting afresh would push a manifest that drops the signatures already there.
        let existing: FetchedManifest?
        do {
            existing = try client.getManifest(repository: repository, reference: tag)
        } catch RegistryError.notFound {
            existing = nil
        }
        var image = SignatureImage()
        if let existing {
            guard case .manifest(let manifest) = existing.document else {
                throw VerificationError.malformed(what: "signature tag \(tag)", reason: "it is an index, not an image")
            }
            let config = try client.getBlob(
                repository: repository, digest: manifest.config.digest, limit: SignatureLimits.standard.manifestBytes)
            image = try SignatureImage(manifest: manifest, config: config)
            // Only a layer naming this payload's digest can hold a duplicate, and its blob is this payload: no
            // blob is read, so a tag a keyless writer filled with large layers costs the signer nothing.
            let payload = SHA256Hasher.digest(signature.payload)
            let current = manifest.layers.filter {
                $0.mediaType == SimpleSigningPayload.mediaType && $0.digest == payload
                    && $0.size == Int64(signature.payload.count)
            }.map { CosignSignature(payload: signature.payload, annotations: $0.annotations ?? [:]) }
            if SignatureImage.duplicate(of: signature, in: current, key: key.publicKey) != nil { return .alreadySigned }
        }
        try image.append(signature)
        for (_, blob) in image.newBlobs.sorted(by: { $0.key < $1.key }) {
            try client.putBlob(repository: repository, data: blob)
        }
        try client.putBlob(repository: repository, data: image.config)
        let digest = try client.putManifest(
            repository: repository, reference: tag, mediaType: image.manifest.mediaType ?? MediaType.ociManifest,
            data: image.manifestData)
        return .appended(signatureManifest: digest, signatures: image.manifest.layers.count)
    }
}
