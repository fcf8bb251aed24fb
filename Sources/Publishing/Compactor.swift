import BlobCache
import Foundation
import ImageFS
import LayerArchive
import OCI
import Registry
import Verification

/// `mcvfs compact`: merges the fleet images of each target and kind into one (`CompactionPlan.Group`: Triton and
/// vLLM images apart, a vLLM hash directory being a KEY; each `<KEY>` whole, by the mount's rule with the
/// plan's order, `CompactionPlan.batches`: a KEY its sources disagree on is left out and reported; labels
/// recomputed, signed, recorded), then removes the tags that a compaction made at least `keepFor` ago holds every
/// kernel of (`CompactionPlan`).
///
/// Tags are removed as the registry allows: `DELETE` of the tag (distribution spec 1.1); where only manifests can
/// be deleted (CNCF distribution 2.x), `DELETE` of the digest, but only when no tag that stays names the same
/// image. The signature artifacts of a removed image (`sha256-<hex>.sig`, the referrers fallback `sha256-<hex>`)
/// go with it. Blobs stay until the registry's garbage collection; mounts that pinned a removed image serve its
/// kernels from their cache, or, once their layer is gone, from the compaction, which holds the same files.
public struct Compactor {
    /// A repository as compaction reads it: its catalog (trust policy applied), and layers through a provider.
    public struct Repository {
        public var reference: ImageReference
        public var client: RegistryClient
        public var catalog: Catalog
        public var provider: any LayerProvider

        public init(reference: ImageReference, client: RegistryClient, catalog: Catalog, provider: any LayerProvider) {
            self.reference = reference
            self.client = client
            self.catalog = catalog
            self.provider = provider
        }
    }

    public struct Options {
        public var publishing: ImagePublisher.Options
        /// How long a merged tag stays after the compaction that holds it.
        public var keepFor: TimeInterval
        public var now: Date
        /// Where merged trees are exported before they are built (`CacheLayout.work`).
        public var cache: CacheLayout

        public init(publishing: ImagePublisher.Options, keepFor: TimeInterval, cache: CacheLayout, now: Date = Date()) {
            self.publishing = publishing
            self.keepFor = keepFor
            self.cache = cache
            self.now = now
        }
    }

    public struct Report: Sendable, Codable, Equatable {
        public struct Compacted: Sendable, Codable, Equatable {
            public var image: ImagePublisher.Outcome
            /// `repository:tag` of each image merged.
            public var merged: [String]
            /// KEYs two sources hold different bytes for: left out when the two rank alike, else kept as the earlier
            /// compaction has them (`KeyOwnership.Conflict`); at most `ImageTreeBuilder.Report`'s list of them.
            public var conflicts: [KeyOwnership.Conflict] = []
            /// How many there were.
            public var keyConflicts = 0
        }

        public struct Removed: Sendable, Codable, Equatable {
            public var reference: String
            public var digest: String
            public var coveredBy: String
        }

        public var compacted: [Compacted] = []
        public var removed: [Removed] = []
        /// `repository:tag: why it stays`.
        public var kept: [String] = []
        /// Images left out of compaction, and why.
        public var skipped: [String] = []
    }

    let source: Repository
    let destination: Repository
    let options: Options

    public init(source: Repository, destination: Repository? = nil, options: Options) {
        self.source = source
        self.destination = destination ?? source
        self.options = options
    }

    var destinationName: String { destination.reference.repositoryName }

    public func run() throws -> Report {
        var report = Report()
        var images: [CompactionPlan.Image] = []
        var held: [MergeRecord.Source: (image: CacheImage, repository: Repository)] = [:]
        // The compactions this signer made: only its signature tells one from an image that copies the labels.
        var own: Set<MergeRecord.Source> = []
        let signer = options.publishing.signing.map { VerifiedSignature.Signer.key($0.key.publicKey).description }
        let repositories = source.reference.repositoryName == destinationName ? [source] : [source, destination]
        for repository in repositories {
            for entry in repository.catalog.entries {
                guard let found = fleetImage(entry, in: repository, skipped: &report.skipped) else { continue }
                images.append(found.plan)
                held[found.plan.source] = (found.image, repository)
                if let signer, entry.signedBy?.contains(signer) == true { own.insert(found.plan.source) }
            }
        }
        // Without a signing key nothing tells this compactor's images apart: every verified compaction counts.
        let trusted = signer == nil ? nil : own
        for merge in CompactionPlan.merges(images, destination: destinationName, trusted: trusted) {
            let batches = CompactionPlan.batches(of: merge, destination: destinationName, ownCompactions: own)
            let (outcome, image, tree) = try compact(merge, batches: batches, held: held)
            report.compacted.append(
                Report.Compacted(
                    image: outcome, merged: merge.images.map { "\($0.source.repository):\($0.source.tag)" },
                    conflicts: tree.conflicts ?? [], keyConflicts: tree.keyConflicts ?? 0))
            images.append(image)
            own.insert(image.source)  // signed just now, by this signer
        }
        let (remove, keep) = CompactionPlan.removals(
            images, destination: destinationName, now: options.now, keepFor: options.keepFor,
            trusted: signer == nil ? nil : own)
        report.kept = keep.map { "\($0.image.source.repository):\($0.image.source.tag): \($0.reason)" }
        let removing = Set(remove.map(\.image.source))
        for removal in remove {
            let target = removal.image.source
            guard let repository = repositories.first(where: { $0.reference.repositoryName == target.repository })
            else { continue }
            let reference = "\(target.repository):\(target.tag)"
            if !options.publishing.dryRun {
                if let reason = try self.remove(target, from: repository, alongWith: removing) {
                    report.kept.append("\(reference): \(reason)")
                    continue
                }
            }
            report.removed.append(
                Report.Removed(
                    reference: reference, digest: target.digest.description,
                    coveredBy: "\(removal.coveredBy.source.repository):\(removal.coveredBy.source.tag)"))
        }
        return report
    }

    /// The entry as a fleet image of this compaction's prefix, with its keys; nil (and a line in `skipped` when it
    /// looked like one) otherwise.
    private func fleetImage(
        _ entry: Catalog.Entry, in repository: Repository, skipped: inout [String]
    ) -> (plan: CompactionPlan.Image, image: CacheImage)? {
        guard let tag = FleetTag(parsing: entry.name, prefix: options.publishing.prefix) else { return nil }
        let name = "\(repository.reference.repositoryName):\(entry.name)"
        guard let image = entry.image, entry.isUsed else {
            skipped.append("\(name): \(entry.skipReason ?? "not a cache image")")
            return nil
        }
        guard tag.names(image.digest) else {
            skipped.append("\(name): \(PublishingError.tagMismatch(tag: entry.name, digest: image.digest.description))")
            return nil
        }
        guard let targets = image.targets, targets.count == 1 else {
            skipped.append("\(name): a fleet image holds one GPU target; its labels name \(image.targets?.count ?? 0)")
            return nil
        }
        do {
            let layers = try image.layers.map { try repository.provider.index(of: $0, in: image) }
            let record = try MergeRecord(labels: image.labels, image: name)
            let source = MergeRecord.Source(
                repository: repository.reference.repositoryName, tag: entry.name, digest: image.digest)
            let vllm = image.cacheLabels.kinds.contains(.vllm)
            let keys = vllm ? ProvidedKeys.vllmHashes(layers) : ProvidedKeys.topLevelNames(layers)
            let plan = CompactionPlan.Image(
                source: source, target: targets[0], kind: vllm ? .vllm : .triton, keys: keys, record: record)
            return (plan, image)
        } catch {
            skipped.append("\(name): \(error)")
            return nil
        }
    }

    /// Merges one target's images of one kind into a new image of the destination.
    /// - Returns: also what the merged tree reported (its conflicts).
    private func compact(
        _ merge: CompactionPlan.Merge, batches: [MergeRecord.Source: Int],
        held: [MergeRecord.Source: (image: CacheImage, repository: Repository)]
    ) throws -> (ImagePublisher.Outcome, CompactionPlan.Image, ImageTreeBuilder.Report) {
        let work = try WorkDirectory.make("compact", in: options.cache)
        defer { work.remove() }
        let members = merge.images.compactMap { image in held[image.source].map { (image.source, $0) } }
        // Every content is read through the provider of the repository that holds its layer; the store is shared,
        // so the exporter finds each one local once the providers fetched it.
        let readers = members.map(\.1.repository.provider)
        var builder = ImageTreeBuilder(
            options: .init(
                consumerRoot: PublishJob.canonicalRoot, filter: .targets([merge.target]), worldReadable: false),
            readBlob: { digest in try Self.first(readers) { try $0.bytes(of: digest).data() } })
        for (source, (image, repository)) in members {
            let layers = try image.layers.map { try repository.provider.index(of: $0, in: image) }
            repository.provider.prefetch(Array(layers.flatMap(\.contentDigests)))
            builder.add(layers: layers, image: image, batch: batches[source] ?? 0)
        }
        let tree = builder.build(rootIno: 1, firstIno: 16)
        let staging = work.path + "/cache"
        _ = try TreeExporter(tree: tree, source: { digest in try Self.first(readers) { try $0.bytes(of: digest) } })
            .export(into: staging)
        var publishing = options.publishing
        let record = MergeRecord(sources: merge.images.map(\.source), mergedAt: options.now)
        publishing.created = MergeRecord.timestamp(options.now)
        publishing.labels.merge(record.labels) { _, new in new }
        let publisher = ImagePublisher(
            client: destination.client, repository: destination.reference.repository, options: publishing)
        let outcomes =
            switch merge.kind {
            case .triton: try publisher.publish(cacheDirectory: staging, work: work.url)
            case .vllm: try publisher.publish(vllmCache: staging, work: work.url)
            }
        // The merged files must name their target again. A vLLM cache whose C++ kernels do not say their ISA gets
        // this host's (`VLLMCacheLayout`), which need not be the publishers': refused rather than mislabelled.
        guard let outcome = outcomes.first, outcomes.count == 1, outcome.targets == [merge.target.description],
            let digest = try? Digest(parsing: outcome.digest)
        else {
            throw PublishingError.unexpectedMerge(target: merge.target.description, made: outcomes.map(\.targets))
        }
        let image = CompactionPlan.Image(
            source: MergeRecord.Source(repository: destinationName, tag: outcome.tag, digest: digest),
            target: merge.target, kind: merge.kind, keys: Set(outcome.keys), record: record)
        return (outcome, image, tree.report)
    }

    /// Removes one tag; returns why it stays instead, when the registry can only delete an image another tag names.
    private func remove(
        _ target: MergeRecord.Source, from repository: Repository, alongWith removing: Set<MergeRecord.Source>
    ) throws -> String? {
        let client = repository.client
        let name = repository.reference.repository
        if try client.deleteTag(repository: name, tag: target.tag) == .unsupported {
            let sharing = repository.catalog.entries.filter { entry in
                entry.digest == target.digest && entry.name != target.tag
                    && !removing.contains(
                        MergeRecord.Source(repository: target.repository, tag: entry.name, digest: target.digest))
            }
            if let other = sharing.first {
                return "the registry deletes images only by digest, and \(other.name) names the same image"
            }
            try client.deleteManifest(repository: name, digest: target.digest)
        }
        let tags = Set(repository.catalog.entries.map(\.name))
        for artifact in [
            CosignSignature.signatureTag(for: target.digest), RegistryClient.referrersTag(for: target.digest),
        ]
        where tags.contains(artifact) {
            if try client.deleteTag(repository: name, tag: artifact) == .unsupported,
                let digest = try? client.headManifest(repository: name, reference: artifact).digest
            {
                try client.deleteManifest(repository: name, digest: digest)
            }
        }
        return nil
    }

    /// The first result of `body` over `providers` (the first error when none succeeds).
    static func first<R>(_ providers: [any LayerProvider], _ body: (any LayerProvider) throws -> R) throws -> R {
        var firstError: (any Error)?
        for provider in providers {
            do { return try body(provider) } catch { firstError = firstError ?? error }
        }
        throw firstError ?? PublishingError.unexpectedMerge(target: "", made: [])
    }
}
