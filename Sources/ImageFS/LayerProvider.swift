import Foundation
import OCI
import TarIndex

/// Where the filesystem gets layer contents from. The filesystem knows nothing of registries: a provider
/// fetches, verifies and indexes a layer the first time it is asked, and serves it locally after that.
public protocol LayerProvider: Sendable {
    /// The index of `layer`, fetching and verifying the blob first when it is not local (or, for an eStargz
    /// layer, only its TOC).
    func index(of layer: Descriptor, in image: CacheImage) throws -> LayerIndex
    /// Path of a verified file blob in the local store, nil when absent. Never fetches.
    func path(of content: Digest) -> String?
    /// Path of a verified file blob, fetching (and verifying) it first when an index names it but it is not
    /// local yet.
    func materialize(_ content: Digest) throws -> String
    /// Where the verified bytes of a file blob are, fetching them first when needed; a provider may serve
    /// freshly fetched bytes from memory while it stores them.
    func source(of content: Digest) throws -> FileSource
    /// Stores what `prefetch` holds in memory (called in the background once the tree is built).
    func persistPrefetched()
    /// The bytes of a verified file blob (prefetched ones may be held in memory), fetching it first when needed.
    func contents(of content: Digest) throws -> Data
    /// Makes what it can of `contents` local ahead of use, in as few requests as it can; failures are left for
    /// `materialize` to report.
    func prefetch(_ contents: [Digest])
}

/// Where a verified file's bytes are.
public enum FileSource: Sendable {
    case file(path: String)
    case memory(Data)
    /// In place in a mapping (a file of a whole layer's pack), served without a copy.
    case region(MappedRegion)
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

extension LayerProvider {
    public func source(of content: Digest) throws -> FileSource {
        .file(path: try materialize(content))
    }

    public func materialize(_ content: Digest) throws -> String {
        guard let path = path(of: content) else {
            throw FSError.unavailable(reason: "file blob \(content) missing from the local store")
        }
        return path
    }

    public func prefetch(_ contents: [Digest]) {}

    public func persistPrefetched() {}

    public func contents(of content: Digest) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: try materialize(content)))
    }
}
