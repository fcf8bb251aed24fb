import Foundation

/// Where a verified file's bytes are. The one answer the read path passes up unchanged, from the layer fetcher
/// through the node's leased provider to the filesystem, which serves each case its own way.
public enum FileBytes: Sendable {
    /// In the local store, at this path.
    case stored(path: String)
    /// Fetched and verified, held in memory until a background commit stores them.
    case held(Data)
    /// In place in a read-only mapping (a file of a whole layer's pack), served without a copy.
    case mapped(MappedRegion)

    /// The bytes themselves (a copy for `mapped`, a read for `stored`): for callers that parse a file whole, such
    /// as the tree's metadata and group files.
    /// - Throws: `CacheError.io` when a stored file cannot be read.
    public func data() throws(CacheError) -> Data {
        switch self {
        case .held(let data): return data
        case .mapped(let region): return Data(region.bytes)
        case .stored(let path):
            let file = try MappedFile(path: path)
            return withExtendedLifetime(file) { Data(file.bytes) }
        }
    }
}

/// Read-only bytes in a mapping that stays valid for as long as `owner` lives: a handle that keeps the region keeps
/// its owner.
public struct MappedRegion: @unchecked Sendable {
    // The pages are mapped read-only and never change; `owner` keeps them mapped.
    public let bytes: UnsafeRawBufferPointer
    public let owner: any AnyObject & Sendable

    public init(bytes: UnsafeRawBufferPointer, owner: any AnyObject & Sendable) {
        self.bytes = bytes
        self.owner = owner
    }
}
