import Foundation
import OCI
import Registry
import Verification

/// The signatures a source holds for one manifest digest, in both layouts cosign writes: the legacy image at tag
/// `sha256-<hex>.sig` (cosign v1/v2, and what cosign v3 verifies with `--new-bundle-format=false`), and Sigstore
/// bundles attached as OCI referrers (cosign v3's default), through the referrers API or its `sha256-<hex>`
/// fallback tag.
///
/// Everything is read by digest and checked against it; nothing here decides trust (`ImageVerifier` does).
public struct SignatureFinder: Sendable {
    /// What one lookup found. A candidate that could not even be read is a `problem` (a reason, never a pass).
    public struct Found: Sendable {
        public var legacy: [CosignSignature] = []
        public var bundles: [SigstoreBundle] = []
        /// Unreadable candidates: a `.sig` tag that is not a signature image, a bundle that does not parse.
        public var problems: [String] = []

        public init() {}

        public var isEmpty: Bool { legacy.isEmpty && bundles.isEmpty && problems.isEmpty }
    }

    /// Bounds what a hostile repository can make a verifier download.
    public static let maxSignatureLayers = 256
    public static let maxReferrers = 64

    public static let bundleMediaTypePrefix = "application/vnd.dev.sigstore.bundle"

    private let source: any SignatureSource

    public init(source: any SignatureSource) {
        self.source = source
    }

    /// Looks up both layouts for `digest`.
    /// - Throws: the error of a source that cannot be asked (`isUnreachable`); every other failure is a problem.
    public func signatures(for digest: Digest) throws -> Found {
        var found = Found()
        try legacy(digest, into: &found)
        try bundles(digest, into: &found)
        return found
    }

    /// Only the bundle referrers of `digest`.
    public func bundles(for digest: Digest) throws -> [SigstoreBundle] {
        var found = Found()
        try bundles(digest, into: &found)
        return found.bundles
    }

    /// Runs `body`, turning an answer that is not usable into a problem; an unreachable source propagates.
    private func reading<T>(_ what: @autoclosure () -> String, _ problems: inout [String], _ body: () throws -> T?)
        throws -> T?
    {
        do {
            return try body()
        } catch  where error.isUnreachable {
            throw error
        } catch {
            problems.append("\(what()) is unusable: \(error)")
            return nil
        }
    }

    private func legacy(_ digest: Digest, into found: inout Found) throws {
        let tag = CosignSignature.signatureTag(for: digest)
        let signatures = try reading("signature tag \(tag)", &found.problems) { () throws -> [CosignSignature]? in
            guard let fetched = try source.manifest(tag) else { return nil }
            guard case .manifest(let manifest) = fetched.document else {
                throw VerificationError.malformed(
                    what: "signature tag", reason: "it is an index, not a signature image")
            }
            guard manifest.layers.count <= Self.maxSignatureLayers else {
                throw VerificationError.malformed(
                    what: "signature tag",
                    reason: "\(manifest.layers.count) layers (at most \(Self.maxSignatureLayers) are read)")
            }
            return try CosignSignature.signatures(in: manifest) { try source.blob($0.digest) }
        }
        found.legacy = signatures ?? []
    }

    private func bundles(_ digest: Digest, into found: inout Found) throws {
        let referrers = try reading("referrers of \(digest.short)", &found.problems) {
            try source.referrers(of: digest).filter { ($0.artifactType ?? "").hasPrefix(Self.bundleMediaTypePrefix) }
        }
        for referrer in (referrers ?? []).prefix(Self.maxReferrers) {
            let bundles = try reading("referrer \(referrer.digest.short)", &found.problems) {
                () throws -> [SigstoreBundle]? in
                guard let fetched = try source.manifest(referrer.digest.description) else {
                    throw VerificationError.malformed(what: "referrer", reason: "its manifest is missing")
                }
                guard case .manifest(let manifest) = fetched.document else {
                    throw VerificationError.malformed(what: "referrer", reason: "an index, not a bundle artifact")
                }
                return try manifest.layers.filter { $0.mediaType.hasPrefix(Self.bundleMediaTypePrefix) }.map {
                    try SigstoreBundle(json: try source.blob($0.digest))
                }
            }
            found.bundles += bundles ?? []
        }
    }
}
