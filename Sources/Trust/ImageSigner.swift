import Foundation
import OCI
import Registry
import Verification

/// Signs an image in the layouts verifiers read: the legacy `.sig` image (cosign v1/v2, containers/image
/// policies) and the Sigstore bundle referrer (cosign v3's default). `mcvfs sign` and publishing both use it.
public struct ImageSigner: Sendable {
    public enum Format: String, Sendable, CaseIterable, Comparable {
        /// A simple-signing layer of the `sha256-<hex>.sig` image (`CosignSigner`).
        case legacy
        /// A v0.3 bundle with a DSSE in-toto statement, attached as an OCI referrer (`BundleSigner`).
        case bundle

        public static func < (a: Format, b: Format) -> Bool { a.rawValue < b.rawValue }
    }

    /// What each requested layout did.
    public struct Result: Sendable, Equatable {
        public var legacy: CosignSigner.Outcome?
        public var bundle: BundleSigner.Outcome?
    }

    private let client: RegistryClient
    private let repository: String

    public init(client: RegistryClient, repository: String) {
        self.client = client
        self.repository = repository
    }

    /// Signs the image `subject` (its manifest's descriptor) in each of `formats`.
    /// - Parameters:
    ///   - reference: the legacy payload's `docker-reference` (cosign writes the repository, `registry/name`).
    ///   - annotations: `-a key=value` pairs (the legacy payload's `optional`, the bundle statement subject's
    ///     `annotations`).
    public func sign(
        subject: Descriptor, reference: String, annotations: [String: String], key: PrivateKey, formats: Set<Format>
    ) throws -> Result {
        var result = Result()
        if formats.contains(.legacy) {
            result.legacy = try CosignSigner(client: client, repository: repository).sign(
                digest: subject.digest, reference: reference, annotations: annotations, key: key)
        }
        if formats.contains(.bundle) {
            result.bundle = try BundleSigner(client: client, repository: repository).sign(
                subject: subject, annotations: annotations, key: key)
        }
        return result
    }
}
