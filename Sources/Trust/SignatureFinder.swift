import Foundation
import OCI
import Registry
import Verification

/// The signatures a registry holds for one manifest digest, in both layouts cosign writes: the legacy image at tag
/// `sha256-<hex>.sig` (cosign v1/v2, `cosign sign --key` today), and Sigstore bundles attached as OCI referrers (cosign
/// v3's default), through the referrers API or its `sha256-<hex>` fallback tag.
///
/// Everything is fetched by digest and checked against it; nothing here decides trust (`ImageVerifier` does).
public struct SignatureFinder: Sendable {
    /// What one lookup found. A candidate that could not even be read is a `problem` (a reason, never a pass).
    public struct Found: Sendable {
        public var legacy: [CosignSignature] = []
        public var bundles: [SigstoreBundle] = []
        /// Unreadable candidates: a `.sig` tag that is not a signature image, a bundle that does not parse.
        public var problems: [String] = []

        public var isEmpty: Bool { legacy.isEmpty && bundles.isEmpty && problems.isEmpty }
    }

    /// Bounds what a hostile repository can make a verifier download.
    public static let maxSignatureLayers = 256
    public static let maxReferrers = 64

    public static let bundleMediaTypePrefix = "application/vnd.dev.sigstore.bundle"

    private let client: RegistryClient
    private let repository: String

    public init(client: RegistryClient, repository: String) {
        self.client = client
        self.repository = repository
    }

    /// Looks up both layouts for `digest`.
    /// - Throws: `RegistryError` when the registry cannot be asked (other than a 404 for an absent signature).
    public func signatures(for digest: Digest) throws -> Found {
        var found = Found()
        try legacy(digest, into: &found)
        try bundles(digest, into: &found)
        return found
    }

    private func legacy(_ digest: Digest, into found: inout Found) throws {
        let tag = CosignSignature.signatureTag(for: digest)
        let fetched: FetchedManifest
        do {
            fetched = try client.getManifest(repository: repository, reference: tag)
        } catch RegistryError.notFound {
            return
        } catch let error as RegistryError where !error.isTransient {
            found.problems.append("signature tag \(tag) is unusable: \(error)")
            return
        }
        guard case .manifest(let manifest) = fetched.document else {
            found.problems.append("signature tag \(tag) is an index, not a signature image")
            return
        }
        guard manifest.layers.count <= Self.maxSignatureLayers else {
            found.problems.append(
                "signature tag \(tag) has \(manifest.layers.count) layers (at most \(Self.maxSignatureLayers) are read)"
            )
            return
        }
        do {
            found.legacy = try CosignSignature.signatures(in: manifest) { layer in
                try client.getBlob(repository: repository, digest: layer.digest)
            }
        } catch let error as RegistryError where error.isTransient {
            throw error
        } catch {
            found.problems.append("signature image \(tag) (\(fetched.digest.short)) is unusable: \(error)")
        }
    }

    private func bundles(_ digest: Digest, into found: inout Found) throws {
        let referrers: [Descriptor]
        do {
            referrers = try client.referrers(repository: repository, digest: digest).filter {
                ($0.artifactType ?? "").hasPrefix(Self.bundleMediaTypePrefix)
            }
        } catch let error as RegistryError where !error.isTransient {
            found.problems.append("referrers of \(digest.short) are unusable: \(error)")
            return
        }
        for referrer in referrers.prefix(Self.maxReferrers) {
            do {
                let fetched = try client.getManifest(repository: repository, reference: referrer.digest.description)
                guard case .manifest(let manifest) = fetched.document else {
                    found.problems.append("referrer \(referrer.digest.short) is an index, not a bundle artifact")
                    continue
                }
                for layer in manifest.layers where layer.mediaType.hasPrefix(Self.bundleMediaTypePrefix) {
                    let blob = try client.getBlob(repository: repository, digest: layer.digest)
                    found.bundles.append(try SigstoreBundle(json: blob))
                }
            } catch let error as RegistryError where error.isTransient {
                throw error
            } catch {
                found.problems.append("referrer \(referrer.digest.short) is unusable: \(error)")
            }
        }
    }
}
