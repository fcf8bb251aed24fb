import ContentHash
import Foundation
import OCI
import Registry
import Verification

/// Attaches cosign v3 signatures: a Sigstore bundle v0.3 (DSSE over the image's in-toto statement) pushed as an
/// OCI 1.1 referrer of the image, as `cosign sign --key --tlog-upload=false` does by default since cosign 3.0.
///
/// The referrer manifest is cosign's (`WriteAttestationNewBundleFormat`): an empty config, one bundle layer, the
/// image as `subject`, `artifactType` the bundle media type, and the `dev.sigstore.bundle.*` annotations. A
/// registry without the referrers API does not list it by subject, so it is then added to the referrers tag
/// schema's index at `sha256-<hex>`, as go-containerregistry does for cosign.
public struct BundleSigner: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// The referrer was pushed; `fallbackTag` names the index it was listed in when the registry lacks the API.
        case attached(referrer: Digest, fallbackTag: String?)
        /// A bundle by the same key with the same annotations already signs the image; nothing was pushed.
        case alreadySigned
    }

    static let emptyConfig = Data("{}".utf8)
    static let emptyConfigMediaType = "application/vnd.oci.empty.v1+json"

    private let client: RegistryClient
    private let repository: String

    public init(client: RegistryClient, repository: String) {
        self.client = client
        self.repository = repository
    }

    /// Signs the image `subject` (its manifest's descriptor).
    /// - Parameters:
    ///   - annotations: `-a key=value` pairs, carried by the statement's subject.
    ///   - created: the referrer's `org.opencontainers.image.created`.
    public func sign(subject: Descriptor, annotations: [String: String], key: PrivateKey, created: Date = Date())
        throws -> Outcome
    {
        if try alreadySigned(subject.digest, annotations: annotations, key: key.publicKey) { return .alreadySigned }
        let bundle = try SigstoreBundle.signImage(digest: subject.digest, annotations: annotations, key: key)
        let configDigest = try client.putBlob(repository: repository, data: Self.emptyConfig)
        let layerDigest = try client.putBlob(repository: repository, data: bundle)
        var manifest = Manifest(
            mediaType: MediaType.ociManifest,
            config: Descriptor(
                mediaType: Self.emptyConfigMediaType, digest: configDigest, size: Int64(Self.emptyConfig.count)),
            layers: [
                Descriptor(
                    mediaType: SigstoreBundle.mediaTypeV03, digest: layerDigest, size: Int64(bundle.count))
            ])
        manifest.artifactType = SigstoreBundle.mediaTypeV03
        manifest.subject = Descriptor(mediaType: subject.mediaType, digest: subject.digest, size: subject.size)
        manifest.annotations = [
            "org.opencontainers.image.created": created.formatted(.iso8601),
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": SigstoreBundle.imageSignaturePredicate,
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(manifest)
        let digest = try client.putManifest(
            repository: repository, reference: SHA256Hasher.digest(data).description, mediaType: MediaType.ociManifest,
            data: data)
        var descriptor = Descriptor(mediaType: MediaType.ociManifest, digest: digest, size: Int64(data.count))
        descriptor.artifactType = SigstoreBundle.mediaTypeV03
        descriptor.annotations = manifest.annotations
        if try client.referrers(repository: repository, digest: subject.digest).contains(where: { $0.digest == digest })
        {
            return .attached(referrer: digest, fallbackTag: nil)
        }
        return .attached(referrer: digest, fallbackTag: try list(descriptor, for: subject.digest))
    }

    /// Adds `descriptor` to the referrers tag schema's index for `subject`, keeping what it lists.
    private func list(_ descriptor: Descriptor, for subject: Digest) throws -> String {
        let tag = RegistryClient.referrersTag(for: subject)
        var index = Index(manifests: [])
        do {
            let existing = try client.getManifest(repository: repository, reference: tag)
            guard case .index(let found) = existing.document else {
                throw VerificationError.malformed(what: "referrers tag \(tag)", reason: "it is not an image index")
            }
            index = found
        } catch RegistryError.notFound {}
        index.manifests.append(descriptor)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        try client.putManifest(
            repository: repository, reference: tag, mediaType: MediaType.ociIndex, data: try encoder.encode(index))
        return tag
    }

    /// Whether a bundle referrer by `key` with these annotations already signs `digest` (cosign's duplicate rule for
    /// `.sig` layers, applied to bundles): signing again would only add a randomised twin.
    private func alreadySigned(_ digest: Digest, annotations: [String: String], key: PublicKey) throws -> Bool {
        let found = try SignatureFinder(source: RegistrySignatureSource(client: client, repository: repository))
            .bundles(for: digest)
        let verifier = CosignVerifier(policy: .key([key]), requiredAnnotations: annotations)
        return found.contains { bundle in
            guard let verified = try? verifier.verify(bundle: bundle, digest: digest) else { return false }
            return verified.predicateType == SigstoreBundle.imageSignaturePredicate
                && verified.annotations.count == annotations.count
        }
    }
}
