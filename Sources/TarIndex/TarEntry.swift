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

    public init(layer: Digest, entries: [TarEntry]) {
        self.layer = layer
        self.entries = entries
    }

    /// Content blobs the index refers to.
    public var contentDigests: Set<Digest> { Set(entries.compactMap(\.content)) }
}
