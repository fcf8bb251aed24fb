import Foundation
import ImageBuilder
import OCI
import Registry
import Trust
import Verification

/// Builds the cache images of a Triton cache directory, one per GPU target (MCV layout and labels, eStargz layer,
/// reproducible), and pushes each under its `FleetTag`.
///
/// The order makes every tag trustworthy the moment it appears: blobs, then the manifest by digest (untagged),
/// then the signatures (`--sign-key`), then the tag. An interrupted publish leaves at most an untagged manifest,
/// which mounts never see and the registry's garbage collection removes; it never leaves a tag naming an
/// incomplete or not-yet-signed image.
public struct ImagePublisher: Sendable {
    public struct Signing: Sendable {
        public var key: PrivateKey
        /// The signed payload's `docker-reference` (cosign writes the repository, `registry/name`).
        public var dockerReference: String
        /// The layouts written (`--signature-format`): both by default, as `mcvfs sign`.
        public var formats: Set<ImageSigner.Format>

        public init(
            key: PrivateKey, dockerReference: String,
            formats: Set<ImageSigner.Format> = Set(ImageSigner.Format.allCases)
        ) {
            self.key = key
            self.dockerReference = dockerReference
            self.formats = formats
        }
    }

    public struct Options: Sendable {
        public var prefix: String
        public var signing: Signing?
        /// Build and report, push nothing.
        public var dryRun: Bool
        public var chunkSize: Int
        /// RFC 3339 `created` for the configs (compactions record when they merged); nil keeps digests reproducible.
        public var created: String?
        /// Labels added to every image's config.
        public var labels: [String: String]

        public init(
            prefix: String = FleetTag.defaultPrefix, signing: Signing? = nil, dryRun: Bool = false,
            chunkSize: Int = 16 << 20, created: String? = nil, labels: [String: String] = [:]
        ) {
            self.prefix = prefix
            self.signing = signing
            self.dryRun = dryRun
            self.chunkSize = chunkSize
            self.created = created
            self.labels = labels
        }
    }

    /// One image of a publish.
    public struct Outcome: Sendable, Codable, Equatable {
        public enum State: String, Sendable, Codable {
            /// Pushed now.
            case pushed
            /// The registry already had this very image under its tag (another node published the same kernels):
            /// nothing but a signature of ours was added.
            case present
            /// `--dry-run`: what a publish would push.
            case wouldPush
        }

        public var tag: String
        public var digest: String
        public var targets: [String]
        /// The `<KEY>/` directories it holds.
        public var keys: [String]
        public var state: State
        /// Blobs uploaded (those the registry already had are not sent again).
        public var blobsPushed: Int
        public var signed: Bool
    }

    let client: RegistryClient
    let repository: String
    let options: Options

    public init(client: RegistryClient, repository: String, options: Options) {
        self.client = client
        self.repository = repository
        self.options = options
    }

    /// Publishes the Triton cache at `directory`: one image per target of its kernels.
    /// - Parameter work: a scratch directory for the layers being built.
    public func publish(cacheDirectory directory: String, work: URL) throws -> [Outcome] {
        let scan = try CacheScan(scanning: directory)
        let builder = ImageBuilder(
            scan: scan, options: .init(format: .estargz, created: options.created, split: .perTarget))
        return try builder.plans().map { plan in
            var plan = plan
            plan.labels.merge(options.labels) { _, added in added }
            let image = try builder.build(plan, in: work)
            defer { unlink(image.layer.path) }
            return try publish(image, keys: Set(plan.kernels.map(\.directory)).sorted())
        }
    }

    func publish(_ image: BuiltImage, keys: [String]) throws -> Outcome {
        let digest = image.manifestDescriptor.digest
        let tag = FleetTag(prefix: options.prefix, target: image.tagSuffix ?? FleetTag.anyTarget, digest: digest)
            .description
        var outcome = Outcome(
            tag: tag, digest: digest.description, targets: image.targets.map(\.description), keys: keys,
            state: .wouldPush, blobsPushed: 0, signed: false)
        let present = try? client.headManifest(repository: repository, reference: tag).digest
        if present == digest { outcome.state = .present }
        guard !options.dryRun else { return outcome }
        if outcome.state != .present {
            let progress = PublishProgress()
            progress.expect(blobs: image.blobs.count, bytes: image.blobs.reduce(0) { $0 + $1.descriptor.size })
            _ = try RegistryDestination(client: client, repository: repository, chunkSize: options.chunkSize)
                .publish(image, tag: digest.description, progress: progress)
            outcome.blobsPushed = progress.totalBlobs - progress.skippedBlobs
        }
        if let signing = options.signing {
            try sign(image.manifestDescriptor, with: signing)
            outcome.signed = true
        }
        if outcome.state != .present {
            try client.putManifest(
                repository: repository, reference: tag, mediaType: MediaType.ociManifest, data: image.manifest)
            outcome.state = .pushed
        }
        return outcome
    }

    /// Signs in the layouts asked for, each until this key's signature verifies (`ImageSigner.signConfirmed`).
    private func sign(_ subject: Descriptor, with signing: Signing) throws {
        try ImageSigner(client: client, repository: repository).signConfirmed(
            subject: subject, reference: signing.dockerReference, key: signing.key, formats: signing.formats,
            attempts: Self.signingAttempts)
    }

    static let signingAttempts = 3
}
