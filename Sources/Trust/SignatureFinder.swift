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

    public static let bundleMediaTypePrefix = "application/vnd.dev.sigstore.bundle"

    private let source: any SignatureSource
    public let limits: SignatureLimits

    public init(source: any SignatureSource, limits: SignatureLimits = .standard) {
        self.source = source
        self.limits = limits
    }

    /// Looks up both layouts for `digest`, reading at most `limits.totalBytes` in all.
    /// - Throws: the error of a source that cannot be asked (`isUnreachable`); every other failure is a problem.
    public func signatures(for digest: Digest) throws -> Found {
        var found = Found()
        var budget = Budget(left: limits.totalBytes)
        try legacy(digest, into: &found, budget: &budget)
        try bundles(digest, into: &found, budget: &budget)
        return found
    }

    /// Only the bundle referrers of `digest`.
    public func bundles(for digest: Digest) throws -> [SigstoreBundle] {
        var found = Found()
        var budget = Budget(left: limits.totalBytes)
        try bundles(digest, into: &found, budget: &budget)
        return found.bundles
    }

    /// What one lookup may still read, in bytes.
    private struct Budget {
        var left: Int
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

    /// The manifest at `reference`, at most `limits.manifestBytes` and what the budget has left.
    private func manifest(_ reference: String, what: String, budget: inout Budget) throws -> Manifest? {
        let limit = min(limits.manifestBytes, budget.left)
        guard limit > 0 else { throw overBudget }
        guard let fetched = try source.manifest(reference, limit: limit) else { return nil }
        budget.left -= fetched.data.count
        guard case .manifest(let manifest) = fetched.document else {
            throw VerificationError.malformed(what: what, reason: "it is an index, not a manifest")
        }
        return manifest
    }

    /// The blob `layer` names, if its descriptor's size is within `limit` and the budget; fetched with that size
    /// as its limit, so a registry that sends more is cut off as it streams.
    private func blob(_ layer: Descriptor, limit: Int, budget: inout Budget) throws -> Data {
        guard layer.size >= 0, layer.size <= Int64(limit) else {
            throw NotRead.tooLarge(size: layer.size, limit: limit)
        }
        guard layer.size <= Int64(budget.left) else { throw overBudget }
        let data = try source.blob(layer.digest, limit: Int(layer.size))
        budget.left -= data.count
        return data
    }

    /// Why an artifact was not read: a limit, whatever the artifact holds.
    enum NotRead: Error, Equatable, CustomStringConvertible {
        /// Its descriptor says `size` bytes, past the `limit` on one artifact of its kind (`SignatureLimits`).
        case tooLarge(size: Int64, limit: Int)
        /// With it, one lookup would read more than `total` bytes (`SignatureLimits.totalBytes`).
        case overBudget(total: Int)

        var description: String {
            switch self {
            case .tooLarge(let size, let limit): return "\(size) bytes (at most \(limit) are read)"
            case .overBudget(let total):
                return "not read: with it, this image's signature artifacts pass the \(total)-byte limit on what "
                    + "one verification reads"
            }
        }
    }

    private var overBudget: NotRead { .overBudget(total: limits.totalBytes) }

    private func legacy(_ digest: Digest, into found: inout Found, budget: inout Budget) throws {
        let tag = CosignSignature.signatureTag(for: digest)
        let what = "signature tag \(tag)"
        guard
            let manifest = try reading(what, &found.problems, { try self.manifest(tag, what: what, budget: &budget) })
        else { return }
        let layers = manifest.layers.filter { $0.mediaType == SimpleSigningPayload.mediaType }
        let signatures = try read(
            layers, of: what, as: "signature layers", cap: limits.layersPerSignatureImage, limit: limits.payloadBytes,
            naming: { "signature layer \($0.digest.short)" }, problems: &found.problems, budget: &budget,
            parse: { layer, payload in try CosignSignature(layer: layer, payload: payload) })
        found.legacy += signatures
    }

    private func bundles(_ digest: Digest, into found: inout Found, budget: inout Budget) throws {
        let referrers =
            try reading("referrers of \(digest.short)", &found.problems) {
                try source.referrers(of: digest).filter {
                    ($0.artifactType ?? "").hasPrefix(Self.bundleMediaTypePrefix)
                }
            } ?? []
        if referrers.count > limits.referrersPerImage {
            found.problems.append(
                "\(referrers.count - limits.referrersPerImage) of the \(referrers.count) bundle referrers of "
                    + "\(digest.short) are not read (at most \(limits.referrersPerImage) are)")
        }
        for referrer in referrers.prefix(limits.referrersPerImage) {
            let what = "referrer \(referrer.digest.short)"
            let manifest = try reading(what, &found.problems) { () throws -> Manifest? in
                guard let manifest = try self.manifest(referrer.digest.description, what: what, budget: &budget) else {
                    throw VerificationError.malformed(what: what, reason: "its manifest is missing")
                }
                return manifest
            }
            let layers = (manifest?.layers ?? []).filter { $0.mediaType.hasPrefix(Self.bundleMediaTypePrefix) }
            let bundles = try read(
                layers, of: what, as: "bundles", cap: limits.bundlesPerReferrer, limit: limits.bundleBytes,
                naming: { "bundle \($0.digest.short) of \(what)" }, problems: &found.problems, budget: &budget,
                parse: { _, json in try SigstoreBundle(json: json) })
            found.bundles += bundles
        }
    }

    /// Reads the first `cap` of `layers`, each one's blob within `limit` bytes and the budget, and `parse`s it.
    /// The layers past the cap are one problem, naming how many; a layer that cannot be read or parsed is a
    /// problem of its own, never the others'.
    /// - Parameters:
    ///   - what: what holds the layers, as a problem names it.
    ///   - kind: what the layers are, plural, as a problem names them.
    ///   - naming: how a problem names one layer.
    private func read<Value>(
        _ layers: [Descriptor], of what: String, as kind: String, cap: Int, limit: Int,
        naming: (Descriptor) -> String, problems: inout [String], budget: inout Budget,
        parse: (Descriptor, Data) throws -> Value
    ) throws -> [Value] {
        if layers.count > cap {
            problems.append(
                "\(what): \(layers.count - cap) of its \(layers.count) \(kind) are not read (at most \(cap) are)")
        }
        var values: [Value] = []
        for layer in layers.prefix(cap) {
            let value = try reading(naming(layer), &problems) {
                try parse(layer, try blob(layer, limit: limit, budget: &budget))
            }
            if let value { values.append(value) }
        }
        return values
    }
}
