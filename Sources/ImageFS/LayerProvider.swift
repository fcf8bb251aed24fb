import BlobCache
import Foundation
import LayerArchive
import OCI

/// Where the filesystem gets layer contents from: what it needs of a layer and nothing more. The filesystem knows
/// nothing of registries: a provider fetches, verifies and indexes a layer the first time it is asked, and serves
/// it locally after that.
public protocol LayerProvider: Sendable {
    /// The index of `layer`, fetching and verifying the blob first when it is not local (or, for an eStargz
    /// layer, only its TOC).
    func index(of layer: Descriptor, in image: CacheImage) throws -> LayerIndex
    /// Where the verified bytes of a file blob are, fetching them first when they are not local. A local blob is
    /// answered at once, without a lock; freshly fetched bytes may be served from memory while they are stored.
    func bytes(of content: Digest) throws -> FileBytes
    /// Fetches what it can of `contents` ahead of use, in as few requests as it can, and holds it in memory;
    /// failures are left for `bytes(of:)` to report.
    func prefetch(_ contents: [Digest])
    /// Stores what `prefetch` holds in memory (called in the background once the tree is built, and at unmount).
    func persistPrefetched()
}

extension LayerProvider {
    public func prefetch(_ contents: [Digest]) {}

    public func persistPrefetched() {}
}
