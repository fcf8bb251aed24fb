import ArgumentParser
import Foundation
import ImageBuilder
import OCI
import Registry
import Trust
import Verification

/// Where `push` and `convert` send the images they build: a registry (the reference's repository) or an OCI image
/// layout (`--output oci-layout:DIR`), with a progress bar, each image signed after its push when a key is given
/// (asked for before anything is pushed, so a wrong password leaves nothing unsigned behind).
struct ImagePusher {
    let reference: ImageReference
    let output: String?
    /// The caller prints the result (`--json`): `publish` prints no `<digest><TAB><name>` line.
    var quiet = false
    private let destination: any ImageDestination
    private let client: RegistryClient?
    private let signingKey: PrivateKey?
    private let signatureFormat: SignatureFormat

    init(
        reference: ImageReference, output: String?, signKey: String?, signatureFormat: SignatureFormat = .both,
        chunkSize: Int, global: GlobalOptions
    ) throws {
        guard reference.digest == nil else { throw PushError.digestReference(reference.description) }
        self.reference = reference
        self.output = output
        self.signatureFormat = signatureFormat
        signingKey = try signKey.map(loadPrivateKey(path:))
        if signingKey != nil && output != nil { throw PushError.signingLayout }
        if let output {
            let directory = String(output.dropFirst("oci-layout:".count))
            destination = OCILayoutDestination(directory: URL(fileURLWithPath: directory).standardizedFileURL)
            client = nil
        } else {
            let client = try global.client(for: reference)
            destination = RegistryDestination(client: client, repository: reference.repository, chunkSize: chunkSize)
            self.client = client
        }
    }

    /// Checks the options every publishing command takes.
    static func validate(chunkSize: Int, output: String?, created: String?) throws {
        if chunkSize < 1 { throw ValidationError("--chunk-size must be at least 1 byte") }
        if let output, !output.hasPrefix("oci-layout:") || output.count == "oci-layout:".count {
            throw ValidationError("--output must be oci-layout:DIR")
        }
        if let created, ISO8601DateFormatter().date(from: created) == nil {
            throw ValidationError("--created must be an RFC 3339 time such as 2025-01-31T12:00:00Z")
        }
    }

    /// The tag an image goes under: the reference's (or `latest`), with a `--split` suffix.
    func tag(suffix: String?) -> String { FleetTag.split(tag: reference.tag, target: suffix) }

    /// What the image published as `tag` is called in output: the repository (or layout) and the tag.
    func name(tag: String) -> String {
        output == nil ? "\(reference.repositoryName):\(tag)" : "\(output!):\(tag)"
    }

    /// Publishes `image` as `tag`, prints `<digest><TAB><name>` (unless `quiet`), signs it when asked, and removes its layer file.
    /// - Returns: the manifest digest.
    @discardableResult
    func publish(_ image: BuiltImage, tag: String, verb: String) throws -> Digest {
        let bar = ProgressBar(label: "\(verb) \(tag)")
        let progress = PublishProgress { p in
            bar.update(bytes: p.doneBytes, totalBytes: p.totalBytes, blobs: p.doneBlobs, totalBlobs: p.totalBlobs)
        }
        progress.expect(blobs: image.blobs.count, bytes: image.blobs.reduce(0) { $0 + $1.descriptor.size })
        let digest: Digest
        do {
            digest = try destination.publish(image, tag: tag, progress: progress)
        } catch {
            bar.finish()
            throw error
        }
        bar.finish()
        unlink(image.layer.path)
        let name = name(tag: tag)
        Log.info(
            "\(name): \(image.entryCount) kernel(s) for \(image.targets.map(\.description).joined(separator: ", ")); "
                + "layer \(image.layer.descriptor.digest.short) \(formatBytes(image.layer.descriptor.size)), "
                + "\(progress.skippedBlobs) of \(progress.totalBlobs) blob(s) already present")
        if !quiet { print("\(digest)\t\(name)") }
        if let signingKey, let client {
            try ImageSigner(client: client, repository: reference.repository).signConfirmed(
                subject: image.manifestDescriptor, reference: SignCommand.dockerReference(reference), key: signingKey,
                formats: signatureFormat.formats)
            Log.info(
                "signed \(name)@\(digest) with key sha256:\(signingKey.publicKey.fingerprint) "
                    + "(\(signatureFormat.formats.map(\.rawValue).sorted().joined(separator: " and ")))")
        }
        return digest
    }
}

/// Hot-set names an image does not have: a hot set recorded against an older cache, or another target's kernels.
func warnMissing(_ names: [String], tag: String) {
    guard !names.isEmpty else { return }
    for name in names { Log.info("\(tag): hot-set entry \(name) is not in the cache") }
    Log.warning("\(tag): \(names.count) hot-set entr(ies) not in the cache were left out; --log-level info lists them")
}

enum PushError: Error, CustomStringConvertible {
    case digestReference(String)
    case signingLayout

    var description: String {
        switch self {
        case .digestReference(let ref):
            return "\(ref): the destination needs a tag, not a digest (the digest is what is computed)"
        case .signingLayout:
            return "--sign-key signs in a registry; with --output oci-layout push the layout, then `mcvfs sign` it"
        }
    }
}
