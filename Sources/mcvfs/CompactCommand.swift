import ArgumentParser
import Foundation
import GPU
import NodeService
import OCI
import Publishing
import Trust

struct CompactCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Merge a repository's published images into one image per GPU target; remove merged tags later.",
        discussion: """
            Merges the fleet images (tags PREFIX-<target>-<digest>, as `publish` and mount --publish-to make) of \
            each GPU target into one image: deduplicated by <KEY>, labels recomputed, signed with --sign-key, and \
            recording what it merged and when. Every source image, earlier compactions included, must pass the \
            signature policy (--key, --certificate-identity(-regexp), --policy) or carry --sign-key's own \
            signature; the others are left out, each with its reason. --sign-key needs a policy: a compaction \
            signs only what it verified. A target whose kernels a compaction already holds is left alone. \
            A tag goes once a compaction made at least --keep-for ago holds every kernel it has, so mounts that \
            pinned it have had that long to refresh (mount --refresh-interval) and serve its kernels from the \
            compaction. With --to, the images are compacted into another repository (a CI job promoting a staging \
            repository into the one consumers mount). Removing tags needs delete permission, and a registry that \
            allows deletion (CNCF distribution: storage.delete.enabled); layers go at the registry's garbage \
            collection. See docs/fleet.md and docs/security.md.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: PublishOptions
    @OptionGroup var trust: TrustOptions

    @Option(help: "Compact into this REGISTRY/REPOSITORY instead (default: REPOSITORY itself).") var to: String?

    @Option(help: "How long merged tags stay after the compaction that holds them: 30m, 24h, 7d, 0s.")
    var keepFor: String = "24h"

    @Flag(help: "Show what would be merged and removed; change nothing.") var dryRun = false
    @Flag(help: "Print the report as JSON.") var json = false

    @Argument(help: "REGISTRY/REPOSITORY holding the published images.") var repository: String

    func validate() throws {
        _ = try Self.seconds(keepFor)
        if options.signKey != nil && !trust.isEnabled {
            throw ValidationError(
                "--sign-key signs what compaction merges, so it merges only what a signature policy verified: "
                    + "add --key PUBLIC_KEY (the publishing nodes' key), --certificate-identity(-regexp) or "
                    + "--policy FILE")
        }
    }

    func run() throws {
        try runReportingErrors(global) {
            let source = try Self.repositoryOnly(repository)
            let destination = try to.map(Self.repositoryOnly) ?? source
            let signing = try options.signing(for: destination)
            let cache = try NodeCache(layout: try global.cache.layout(), log: .process)
            // What this compaction signs it verified first: every source (earlier compactions included) passes
            // the flags' policy, or carries this signer's own signature (the compactions it made before).
            let mine = signing.map { TrustPolicy.keys([$0.key.publicKey]) }
            let policy = trust.catalogPolicy(cache.layout, alsoAccepting: mine)
            if !trust.isEnabled {
                Log.warning(
                    "no signature policy: every \(options.tagPrefix)-* image is merged, signed or not, and the "
                        + "compaction is unsigned; add --key, --certificate-identity or --policy (and --sign-key)")
            } else if signing == nil && !dryRun {
                Log.warning(
                    "the compaction is not signed, so mounts with this policy will not use it; add --sign-key")
            }
            let reader = try repositoryReader(source, cache: cache, policy: policy)
            defer { reader.release() }
            var destinationReader: (repository: Compactor.Repository, release: () -> Void)?
            if destination != source {
                let opened = try repositoryReader(destination, cache: cache, policy: policy)
                destinationReader = (opened.repository, opened.release)
            }
            defer { destinationReader?.release() }
            let report = try Compactor(
                source: reader.repository, destination: destinationReader?.repository,
                options: .init(
                    publishing: options.publishing(signing: signing, dryRun: dryRun),
                    keepFor: try Self.seconds(keepFor), cache: cache.layout)
            ).run()
            warnOfConflicts(report, in: destination)
            if json { return try printJSON(report) }
            for line in report.skipped { Log.warning("not compacted: \(line)") }
            if !report.skipped.isEmpty {
                Log.warning(
                    "\(report.skipped.count) image(s) not compacted (unsigned, not verified or not fleet images); "
                        + "the lines above say why")
            }
            for compacted in report.compacted {
                let name = "\(destination.repositoryName):\(compacted.image.tag)"
                if dryRun {
                    print("would compact \(compacted.merged.count) image(s) into \(name)")
                } else {
                    print("\(compacted.image.digest)\t\(name)")
                }
                Log.info(
                    "\(name) merges \(compacted.merged.joined(separator: ", ")): \(compacted.image.keys.count) kernel(s)"
                )
                for conflict in compacted.conflicts {
                    print("conflict\t\(name)\t\(conflict)")
                }
            }
            for removed in report.removed {
                print(
                    "\(dryRun ? "would remove" : "removed") \(removed.reference) (its kernels are in \(removed.coveredBy))"
                )
            }
            for kept in report.kept { Log.info("kept \(kept)") }
        }
    }

    /// Logs the KEYs the merged images disagree on: a sign of a compromised node key or of a compiler that is not
    /// deterministic, that an operator settles by removing the wrong image.
    private func warnOfConflicts(_ report: Compactor.Report, in destination: ImageReference) {
        for compacted in report.compacted where compacted.keyConflicts > 0 {
            let name = "\(destination.repositoryName):\(compacted.image.tag)"
            for conflict in compacted.conflicts {
                let outcome =
                    conflict.served.map { "kept \($0)'s bytes (an earlier compaction's)" }
                    ?? "left it out (consumers compile it locally)"
                Log.warning("\(name): \(conflict): \(outcome)")
            }
            Log.warning(
                "\(name): \(compacted.keyConflicts) KEY conflict(s) among the merged images (a compromised node "
                    + "key, or a compiler that is not deterministic): remove the image with the wrong bytes, and "
                    + "the next image published lets compaction merge the KEY (docs/fleet.md, \"Conflicts\")")
        }
    }

    /// A repository's verified catalog of every image, and a lease-holding provider for its layers.
    private func repositoryReader(
        _ reference: ImageReference, cache: NodeCache, policy: any CatalogPolicy
    ) throws -> (repository: Compactor.Repository, release: () -> Void) {
        let client = try global.client(for: reference)
        let upstream = Upstream(reference: reference, origin: client, log: .process)
        let catalog = try CatalogService(
            upstream: upstream, store: cache.store, records: CatalogRecords(layout: cache.layout), recording: .none
        ).resolve(ResolvedSelection(scope: .all), policy: policy)
        let provider = try LeasedLayerProvider(
            catalog: catalog, upstream: upstream, cache: cache, options: .init(command: "compact", lazy: true))
        return (
            Compactor.Repository(reference: reference, client: client, catalog: catalog, provider: provider),
            provider.release
        )
    }

    static func repositoryOnly(_ text: String) throws -> ImageReference {
        let reference = try ImageReference(parsing: text)
        guard reference.isRepositoryOnly else {
            throw ValidationError("\(text): compact names a repository, without a tag or digest")
        }
        return reference
    }

    /// `90s`, `30m`, `24h`, `7d`, or plain seconds.
    static func seconds(_ text: String) throws -> TimeInterval {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        let unit = text.last.flatMap { units[$0] }
        guard let value = Double(unit == nil ? text : String(text.dropLast())), value >= 0, value.isFinite else {
            throw ValidationError("--keep-for '\(text)': a duration such as 90s, 30m, 24h or 7d")
        }
        return value * (unit ?? 1)
    }
}
