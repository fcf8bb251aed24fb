/// Every image a reference names, each either used by a mount or skipped with the reason, in the mount's
/// merge order (tags sorted by name; an index's manifests in index order after their tag).
public struct Catalog: Sendable, Codable, Hashable {
    public struct Entry: Sendable, Codable, Hashable {
        /// Tag, `tag[n]` for the n-th manifest of an index, or the digest when pinned by digest.
        public var name: String
        public var digest: Digest?
        public var mediaType: String?
        public var image: CacheImage?
        public var kinds: [CacheLabels.Kind]
        /// From the summary label; nil when the image has none (its kernels are then filtered one by one).
        public var targets: [GPUTarget]?
        /// Nil when the mount uses the image.
        public var skipReason: String?
        /// For `tag[n]`: the digest of the index that listed this manifest (a signature on it covers this image).
        public var indexDigest: Digest? = nil
        /// Under a signature policy: who signed the image (set only when its signatures were verified).
        public var signedBy: [String]? = nil

        public init(
            name: String, digest: Digest?, mediaType: String?, image: CacheImage?, kinds: [CacheLabels.Kind],
            targets: [GPUTarget]?, skipReason: String?, indexDigest: Digest? = nil, signedBy: [String]? = nil
        ) {
            self.name = name
            self.digest = digest
            self.mediaType = mediaType
            self.image = image
            self.kinds = kinds
            self.targets = targets
            self.skipReason = skipReason
            self.indexDigest = indexDigest
            self.signedBy = signedBy
        }

        public var isUsed: Bool { skipReason == nil && image != nil }
    }

    /// `registry/repository` the catalog describes.
    public var repository: String
    /// The reference as the user gave it.
    public var reference: String
    public var entries: [Entry]

    public init(repository: String, reference: String, entries: [Entry]) {
        self.repository = repository
        self.reference = reference
        self.entries = entries
    }

    public var used: [CacheImage] { entries.filter(\.isUsed).compactMap(\.image) }
    public var skipped: [Entry] { entries.filter { !$0.isUsed } }
}
