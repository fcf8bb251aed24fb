import Foundation
import OCI
import Registry
import Verification

/// Signs an image in the layouts verifiers read: the legacy `.sig` image (cosign v1/v2, containers/image
/// policies) and the Sigstore bundle referrer (cosign v3's default). Every command that signs (`sign`, `push`,
/// `convert`, `publish`, `compact`, `mount --publish-to`) signs through it, in both layouts unless told otherwise.
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

    /// A signature this key wrote that was gone each time it was read back.
    public struct SignatureLost: Error, Equatable, CustomStringConvertible {
        public var digest: Digest
        public var layouts: [String]
        public var attempts: Int

        public var description: String {
            "\(digest): this key's \(layouts.joined(separator: " and ")) signature did not stay in the registry "
                + "after \(attempts) attempts (other signers rewriting the same signature lists)"
        }
    }

    /// Signs as `sign` does, then reads the signatures back until this key's verifies in each of `formats`,
    /// signing again when one is missing. Two signers of one image (nodes publishing the same kernels) rewrite
    /// the same signature lists on a registry without the referrers API, and one signature can be lost: each
    /// signer checks for its own.
    /// - Throws: `SignatureLost` after `attempts` tries, or what signing throws.
    @discardableResult
    public func signConfirmed(
        subject: Descriptor, reference: String, annotations: [String: String] = [:], key: PrivateKey,
        formats: Set<Format>, attempts: Int = 3
    ) throws -> Result {
        var missing = formats
        var result = Result()
        for _ in 0..<attempts {
            result = try sign(
                subject: subject, reference: reference, annotations: annotations, key: key, formats: formats)
            // A fresh cache each time: a verdict that found one layout is trusted, and would be remembered.
            let verifier = ImageVerifier(
                policy: .keys([key.publicKey], requiredAnnotations: annotations), client: client,
                repository: repository, cache: VerdictCache())
            let found = Set(verifier.verify(subject.digest).accepted.map(\.layout.rawValue))
            missing = formats.filter { !found.contains($0.rawValue) }
            if missing.isEmpty { return result }
        }
        throw SignatureLost(digest: subject.digest, layouts: missing.map(\.rawValue).sorted(), attempts: attempts)
    }
}
