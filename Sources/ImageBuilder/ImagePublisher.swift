import Foundation
import OCI
import Registry

/// Where built images go: a registry (blobs first, manifest last, so a failure never leaves a tag naming missing
/// blobs) or an OCI image layout directory.
public protocol ImageDestination {
    /// Stores `image` under `tag` and returns its manifest digest.
    func publish(_ image: BuiltImage, tag: String, progress: PublishProgress) throws -> Digest
}

/// Progress of a publish, in bytes and blobs, for a progress bar.
public final class PublishProgress: @unchecked Sendable {
    public private(set) var totalBytes: Int64 = 0
    public private(set) var doneBytes: Int64 = 0
    public private(set) var totalBlobs = 0
    public private(set) var doneBlobs = 0
    public private(set) var skippedBlobs = 0
    private let onChange: (PublishProgress) -> Void

    public init(onChange: @escaping (PublishProgress) -> Void = { _ in }) { self.onChange = onChange }

    public func expect(blobs: Int, bytes: Int64) {
        totalBlobs += blobs
        totalBytes += bytes
        onChange(self)
    }

    /// `bytes` more of the current blob were sent.
    func advance(_ bytes: Int64) {
        doneBytes += bytes
        onChange(self)
    }

    func finishedBlob(skipped: Bool) {
        doneBlobs += 1
        if skipped { skippedBlobs += 1 }
        onChange(self)
    }
}

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

/// Writes images into an OCI image layout (image-spec `image-layout.md`): `oci-layout`, `blobs/sha256/<hex>` and
/// `index.json`, whose entries carry the tag as `org.opencontainers.image.ref.name`. An existing layout is
/// extended; an entry of the same tag is replaced.
public struct OCILayoutDestination: ImageDestination {
    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    public func publish(_ image: BuiltImage, tag: String, progress: PublishProgress) throws -> Digest {
        let fm = FileManager.default
        let blobs = directory.appendingPathComponent("blobs/sha256")
        try fm.createDirectory(at: blobs, withIntermediateDirectories: true)
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: directory.appendingPathComponent("oci-layout"))
        for (descriptor, source) in image.blobs {
            let target = blobs.appendingPathComponent(descriptor.digest.hex)
            let present = fm.fileExists(atPath: target.path)
            if !present {
                switch source {
                case .file(let path): try copyAtomically(from: URL(fileURLWithPath: path), to: target)
                case .bytes(let data): try data.write(to: target, options: .atomic)
                }
            }
            progress.advance(descriptor.size)
            progress.finishedBlob(skipped: present)
        }
        try image.manifest.write(to: blobs.appendingPathComponent(image.manifestDescriptor.digest.hex), options: .atomic)

        // index.json last: the layout names the image only once all its blobs are in place.
        let indexURL = directory.appendingPathComponent("index.json")
        var index = Index(manifests: [])
        if let data = fm.contents(atPath: indexURL.path) {
            do { index = try JSONDecoder().decode(Index.self, from: data) } catch {
                throw BuildError.unsupported("\(indexURL.path) exists but is not an OCI index: \(error)")
            }
        }
        let refName = "org.opencontainers.image.ref.name"
        index.manifests.removeAll { $0.annotations?[refName] == tag }
        var descriptor = image.manifestDescriptor
        descriptor.annotations = [refName: tag]
        index.manifests.append(descriptor)
        try MCVMetadata.encode(index).write(to: indexURL, options: .atomic)
        return image.manifestDescriptor.digest
    }

    private func copyAtomically(from source: URL, to target: URL) throws {
        let temporary = target.deletingLastPathComponent().appendingPathComponent(".tmp-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: source, to: temporary)
        guard rename(temporary.path, target.path) == 0 else {
            let code = errno
            unlink(temporary.path)
            throw BuildError.io(operation: "rename", path: target.path, errno: code)
        }
    }
}
