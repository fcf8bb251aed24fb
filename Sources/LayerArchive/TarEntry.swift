import OCI

/// One entry of a layer, as the file system needs it. Paths are normalised: relative to the layer root,
/// no leading `./` or `/`, no `.` or `..` components, no trailing `/`.
public struct TarEntry: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable, Hashable {
        case file
        case directory
        case symlink
        /// A hard link to an earlier regular file of the same layer (`linkTarget`); `content` and `size` are
        /// the target's.
        case hardlink
        /// An OCI whiteout `dir/.wh.name`: `path` is the path it deletes from lower layers (`dir/name`).
        case whiteout
        /// An OCI opaque whiteout `dir/.wh..wh..opq`: `path` is the directory (`dir`, or `""` for the root)
        /// whose lower-layer contents are hidden.
        case opaqueWhiteout
    }

    public var path: String
    public var kind: Kind
    /// Permission bits (0o1777 at most: setuid and setgid entries are refused).
    public var mode: UInt32
    /// Byte count of the content (files and hard links), else 0.
    public var size: Int64
    /// The symlink's target as stored (relative, checked to stay inside the layer), or the hard link's
    /// normalised target path.
    public var linkTarget: String?
    /// Modification time, seconds since the epoch.
    public var mtime: Int64
    /// sha256 of the file's bytes, a blob in the `BlobStore` (files and hard links).
    public var content: Digest?

    public init(
        path: String, kind: Kind, mode: UInt32, size: Int64 = 0, linkTarget: String? = nil, mtime: Int64 = 0,
        content: Digest? = nil
    ) {
        self.path = path
        self.kind = kind
        self.mode = mode
        self.size = size
        self.linkTarget = linkTarget
        self.mtime = mtime
        self.content = content
    }
}

/// The entries of one layer blob, in archive order (a path repeated in the archive appears once, with its last
/// definition, at its first position).
public struct LayerIndex: Codable, Sendable, Hashable {
    public var layer: Digest
    public var entries: [TarEntry]
    /// Where each file's bytes lie in the remote blob, for a layer indexed from its eStargz TOC without being
    /// downloaded; nil when the layer was unpacked. Optional, so indexes persisted before it existed still decode.
    public var remote: RemoteLayout?
    /// Where each file's bytes lie in the layer's pack (`packs/sha256/<layer>`), for a layer unpacked whole; nil
    /// for one indexed from its TOC, and for indexes of older versions, whose file contents are blobs of their own.
    public var pack: PackLayout?

    public init(layer: Digest, entries: [TarEntry], remote: RemoteLayout? = nil, pack: PackLayout? = nil) {
        self.layer = layer
        self.entries = entries
        self.remote = remote
        self.pack = pack
    }

    /// File contents the index names (blobs of their own, unless the layer is packed).
    public var contentDigests: Set<Digest> { Set(entries.compactMap(\.content)) }
}

/// Where the contents of an unpacked layer lie in its pack: each distinct content once, at an offset, its size
/// being that of the entries naming it.
public struct PackLayout: Codable, Sendable, Hashable {
    /// Bytes in the pack.
    public var size: Int64
    /// Offset of each content.
    public var offsets: [Digest: Int64]

    public init(size: Int64, offsets: [Digest: Int64]) {
        self.size = size
        self.offsets = offsets
    }

    private enum CodingKeys: String, CodingKey {
        case size, offsets
    }

    // On disk the offsets are a JSON object keyed by the digest's string form, as `RemoteLayout`'s chunks.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        size = try container.decode(Int64.self, forKey: .size)
        let byName = try container.decode([String: Int64].self, forKey: .offsets)
        offsets = try Dictionary(uniqueKeysWithValues: byName.map { (try Digest(parsing: $0.key), $0.value) })
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(size, forKey: .size)
        try container.encode(
            Dictionary(uniqueKeysWithValues: offsets.map { ($0.key.description, $0.value) }), forKey: .offsets)
    }
}

/// The compressed locations of an eStargz layer's files: enough to fetch and verify any one of them with range
/// requests.
public struct RemoteLayout: Codable, Sendable, Hashable {
    /// One gzip member holding a chunk of a file.
    public struct Chunk: Codable, Sendable, Hashable {
        /// Offset and length of the gzip member in the compressed blob.
        public var offset: Int64
        public var length: Int64
        /// Where the chunk's bytes go in the file, and how many there are.
        public var chunkOffset: Int64
        public var size: Int64
        /// The TOC's `chunkDigest`, when it gives one.
        public var digest: Digest?

        public init(offset: Int64, length: Int64, chunkOffset: Int64, size: Int64, digest: Digest?) {
            self.offset = offset
            self.length = length
            self.chunkOffset = chunkOffset
            self.size = size
            self.digest = digest
        }
    }

    /// sha256 of the TOC JSON, as the layer annotation pinned it.
    public var tocDigest: Digest
    /// Chunks of each file content, in file order.
    public var chunks: [Digest: [Chunk]]
    /// Where the `.prefetch.landmark` member starts: the members before it hold the layer's prioritized entries
    /// (its hot set), fetched with one request. Nil when the layer has no prioritized entries.
    public var prefetchEnd: Int64?

    public init(tocDigest: Digest, chunks: [Digest: [Chunk]], prefetchEnd: Int64? = nil) {
        self.tocDigest = tocDigest
        self.chunks = chunks
        self.prefetchEnd = prefetchEnd
    }

    public func chunks(of content: Digest) -> [Chunk]? { chunks[content] }

    private enum CodingKeys: String, CodingKey {
        case tocDigest, chunks, prefetchEnd
    }

    // On disk the chunks stay a JSON object keyed by the digest's string form.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        tocDigest = try container.decode(Digest.self, forKey: .tocDigest)
        let byName = try container.decode([String: [Chunk]].self, forKey: .chunks)
        chunks = try Dictionary(uniqueKeysWithValues: byName.map { (try Digest(parsing: $0.key), $0.value) })
        prefetchEnd = try container.decodeIfPresent(Int64.self, forKey: .prefetchEnd)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tocDigest, forKey: .tocDigest)
        try container.encode(
            Dictionary(uniqueKeysWithValues: chunks.map { ($0.key.description, $0.value) }), forKey: .chunks)
        try container.encodeIfPresent(prefetchEnd, forKey: .prefetchEnd)
    }
}
