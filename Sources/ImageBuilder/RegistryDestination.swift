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

    /// How often the blobs and the manifest go up again when the registry does not know a blob the manifest names.
    static let manifestTries = 3

    /// Pushes the blobs a registry lacks, then the manifest. Two nodes that compiled the same kernels publish the
    /// same blobs at once, and a registry (distribution, measured) can then refuse the manifest naming a blob it
    /// accepted a moment before (`MANIFEST_BLOB_UNKNOWN`): the blobs are checked and pushed again, then the
    /// manifest, a few times, before it is an error.
    public func publish(_ image: BuiltImage, tag: String, progress: PublishProgress) throws -> Digest {
        var tries = 0
        while true {
            tries += 1
            // Only the first pass reports: a second finds what the first pushed and would count it twice.
            try pushBlobs(of: image, progress: tries == 1 ? progress : PublishProgress())
            do {
                return try client.putManifest(
                    repository: repository, reference: tag, mediaType: MediaType.ociManifest, data: image.manifest)
            } catch RegistryError.registry(400, let diagnostics)
                where tries < Self.manifestTries
                && diagnostics.errors.contains(where: { $0.code == "MANIFEST_BLOB_UNKNOWN" })
            {
                continue
            }
        }
    }

    private func pushBlobs(of image: BuiltImage, progress: PublishProgress) throws {
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
    }
}
