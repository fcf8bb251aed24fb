/// Bounds on what one verification reads of a digest's signature artifacts.
///
/// Anyone who can push to a repository can write an image's signature artifacts (its `sha256-<hex>.sig` tag, its
/// referrers) without holding a key, and every `--key` mount verifies in the node daemon, at start and at each
/// refresh. So nothing the registry says decides how much is read: each blob is fetched with its limit enforced
/// while it streams (a descriptor that claims more is not fetched at all), each manifest too, and all of them
/// together spend one budget per digest. An artifact past a limit is skipped with its reason (a `problem`) and
/// the others are still read: junk next to a valid signature does not stop that signature from verifying, as
/// long as the caps reach it. A writer can always delete signatures; what these limits deny is making a verifier
/// hold more than `totalBytes` (plus one bounded referrers list) while it looks.
public struct SignatureLimits: Sendable, Equatable {
    /// One simple-signing payload (a legacy `.sig` layer): a JSON document of a few hundred bytes.
    public var payloadBytes: Int
    /// One Sigstore bundle: a few KiB, a certificate chain and a transparency-log entry included.
    public var bundleBytes: Int
    /// One manifest: the `.sig` image (a descriptor per signature, a keyless one with its certificate in
    /// annotations, a few KiB) or a referrer (one layer).
    public var manifestBytes: Int
    /// Simple-signing layers read from a `.sig` image (cosign appends one per signature; the rest are skipped).
    public var layersPerSignatureImage: Int
    /// Bundle referrers read per image (cosign attaches one per signature).
    public var referrersPerImage: Int
    /// Bundle layers read per referrer manifest (cosign writes one).
    public var bundlesPerReferrer: Int
    /// Every manifest and blob read for one digest together.
    public var totalBytes: Int

    public init(
        payloadBytes: Int, bundleBytes: Int, manifestBytes: Int, layersPerSignatureImage: Int, referrersPerImage: Int,
        bundlesPerReferrer: Int, totalBytes: Int
    ) {
        self.payloadBytes = payloadBytes
        self.bundleBytes = bundleBytes
        self.manifestBytes = manifestBytes
        self.layersPerSignatureImage = layersPerSignatureImage
        self.referrersPerImage = referrersPerImage
        self.bundlesPerReferrer = bundlesPerReferrer
        self.totalBytes = totalBytes
    }

    /// Generous for what cosign writes (a `.sig` image of 64 keyless signatures, 32 bundles), small for a daemon
    /// in a 1 GiB cgroup: at most 4 MiB held per digest.
    public static let standard = SignatureLimits(
        payloadBytes: 64 << 10, bundleBytes: 1 << 20, manifestBytes: 1 << 20, layersPerSignatureImage: 64,
        referrersPerImage: 32, bundlesPerReferrer: 4, totalBytes: 4 << 20)
}
