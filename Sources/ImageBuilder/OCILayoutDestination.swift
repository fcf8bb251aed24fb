import Foundation
import OCI

#if canImport(Glibc)
    import Glibc
#endif

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
        try image.manifest.write(
            to: blobs.appendingPathComponent(image.manifestDescriptor.digest.hex), options: .atomic)

        // index.json last: the layout names the image only once all its blobs are in place.
        let indexURL = directory.appendingPathComponent("index.json")
        var index = Index(manifests: [])
        if let data = fm.contents(atPath: indexURL.path) {
            do { index = try JSONDecoder().decode(Index.self, from: data) } catch {
                throw BuildError.notAnOCIIndex(path: indexURL.path, reason: "\(error)")
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
