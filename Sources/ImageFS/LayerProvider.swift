import OCI
import TarIndex

/// Where the filesystem gets layer contents from. The filesystem knows nothing of registries: a provider
/// fetches, verifies and indexes a layer the first time it is asked, and serves it locally after that.
public protocol LayerProvider: Sendable {
    /// The index of `layer`, fetching and verifying the blob first when it is not local.
    func index(of layer: Descriptor, in image: CacheImage) throws -> LayerIndex
    /// Path of a verified file blob in the local store, nil when absent.
    func path(of content: Digest) -> String?
}
