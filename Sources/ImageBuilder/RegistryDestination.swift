import Foundation
import OCI
import Registry

/// Pushes images to one repository of a registry.
public struct RegistryDestination: ImageDestination {
    public let client: RegistryClient
    public let repository: String
    /// Blobs larger than this go up in PATCH chunks of this size; smaller ones in one PUT.
    public let chunkSize: Int

    public init(client: RegistryClient, repository: String, chunkSize: Int = 16 << 20) {
        self.client = client
        self.repository = repository
        self.chunkSize = chunkSize
    }

    public func publish(_ image: BuiltImage, tag: String, progress: PublishProgress) throws -> Digest {
        for (descriptor, source) in image.blobs {
            var sent: Int64 = 0
            let report: (Int64) -> Void = { total in
                progress.advance(total - sent)
                sent = total
            }
            let uploaded: Bool
            switch source {
            case .file(let path):
                uploaded = try client.uploadBlob(
                    repository: repository, digest: descriptor.digest, size: descriptor.size, fileAt: path,
                    chunkSize: chunkSize, progress: report)
            case .bytes(let data):
                uploaded = try client.uploadBlob(
                    repository: repository, digest: descriptor.digest, size: descriptor.size, chunkSize: chunkSize,
                    read: { offset, count in data.subdata(in: Int(offset)..<Int(offset) + count) }, progress: report)
            }
            if !uploaded { progress.advance(descriptor.size) }
            progress.finishedBlob(skipped: !uploaded)
        }
        return try client.putManifest(
            repository: repository, reference: tag, mediaType: MediaType.ociManifest, data: image.manifest)
    }
}
