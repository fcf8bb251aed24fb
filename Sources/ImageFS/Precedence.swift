import OCI

/// An image's place in a mount's merge order, and so which image gives each KEY (docs/fleet.md, "Precedence").
///
/// Images fall into ranks (`Rank`). A KEY (a Triton `<KEY>/` directory, a vLLM `torch_compile_cache/<hash>/`)
/// comes whole from the first rank that has it; later ranks add nothing under it. Within a rank, only a copy that
/// every image of the rank holding the KEY agrees on is given: where they hold different bytes for it, nothing
/// decides between them that a publisher could not choose, so the KEY is withheld (absent, compiled locally) and
/// reported (`KeyOwnership`). The ranks, in order:
/// 1. *Base images*, each a rank of its own: those of batch 0 (the node used them from its first mount of the
///    reference on) whose tag is not of the node-published shape, in tag order (an index's manifests in index
///    order), as the repository's owner laid them out.
/// 2. *Added images*, one rank per batch: images published by nodes (tags ending in 16 hex digits, as `publish`
///    and `compact` name them, whether or not they name their digest), then the images of each later batch: those
///    a remount found new (`FirstSeen` in NodeService) and those each live refresh added. The manifest digest
///    orders a batch's images only where their copies of a KEY are the same.
///
/// So an added image only ever adds KEYs that no image before it provides, and since a new image ranks after every
/// image the node had, no refresh, new tag or new signature changes the files of a KEY the mount's images
/// provide; an image of a rank already served cannot take a KEY from its peers by its digest either. The order of
/// a mount's images never changes while it runs: a KEY once resolved stays as it was.
public struct Precedence: Sendable, Hashable, Comparable, CustomStringConvertible {
    public enum Tier: Int, Sendable, Hashable, Comparable {
        case base = 0
        case added = 1

        public static func < (lhs: Tier, rhs: Tier) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    public var tier: Tier
    /// When the node first used the image: 0 at its first mount of the reference, then one more for each later
    /// mount or refresh that used new images.
    public var batch: Int
    /// A base image's place in the catalog (tag order); 0 for added images.
    public var position: Int
    /// The manifest digest's hex digits: which of a rank's images with the same copy of a KEY gives it.
    public var digest: String

    /// The images that share a rank: one base image, or the added images of one batch.
    public struct Rank: Sendable, Hashable, Comparable {
        var tier: Tier
        var batch: Int
        var position: Int

        /// After every image's: what a wait bounded by it waits for is every image.
        static let last = Rank(tier: .added, batch: .max, position: .max)

        public static func < (lhs: Rank, rhs: Rank) -> Bool {
            (lhs.tier, lhs.batch, lhs.position) < (rhs.tier, rhs.batch, rhs.position)
        }
    }

    public var rank: Rank { Rank(tier: tier, batch: batch, position: position) }

    /// - Parameters:
    ///   - position: the image's place in the catalog it came with.
    ///   - batch: when the node first used the image (`batch`).
    public init(of image: CacheImage, position: Int, batch: Int) {
        let base = batch == 0 && !FleetTag.isNodePublished(image.name)
        tier = base ? .base : .added
        self.batch = base ? 0 : batch
        self.position = base ? position : 0
        digest = image.digest.hex
    }

    public static func < (lhs: Precedence, rhs: Precedence) -> Bool {
        lhs.rank < rhs.rank || (lhs.rank == rhs.rank && lhs.digest < rhs.digest)
    }

    public var description: String {
        tier == .base ? "base #\(position)" : "added (batch \(batch), \(digest.prefix(12)))"
    }

    /// The KEY a path (relative to the cache root) lies under: its first component, or below vLLM's
    /// `torch_compile_cache/` a hash directory (`torch_compile_cache/<hash>`,
    /// `torch_compile_cache/torch_aot_compile/<hash>`); nil for the shared directories themselves.
    static func key(of path: Substring) -> Substring? {
        let components = path.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        guard components.first == Self.sharedRoot else { return components.first }
        guard components.count > 1 else { return nil }
        guard components[1] == Self.sharedAOTDirectory else { return path[..<components[1].endIndex] }
        return components.count > 2 ? path[..<components[2].endIndex] : nil
    }

    /// vLLM's top-level directory, which every vLLM image shares: its children are the KEYs.
    static let sharedRoot: Substring = "torch_compile_cache"
    /// The directory below `sharedRoot` that holds AOT-compile hash directories (vLLM 0.30+), shared like it: two
    /// images with different AOT hashes are not two copies of one KEY.
    static let sharedAOTDirectory: Substring = "torch_aot_compile"
}
