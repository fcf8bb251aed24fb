import ArgumentParser
import BlobCache
import Foundation
import Glibc
import ImageFS
import NodeService
import OCI
import Publishing

/// `mount --publish-to`: the daemon publishes what is compiled through the mount, on an interval and at unmount.
struct MountPublishingOptions: ParsableArguments {
    @Option(
        help: """
            Publish the kernels compiled through this mount to REGISTRY/REPOSITORY (as `mcvfs publish` does), every \
            --publish-interval seconds and at unmount. Failures are logged, counted in status and metrics, and \
            retried; reads never wait for it. Default: $MCVFS_PUBLISH_TO (empty: off).
            """)
    var publishTo: String?

    @Option(help: "Seconds between automatic publishes (default: $MCVFS_PUBLISH_INTERVAL, else 60).")
    var publishInterval: Double?

    @Option(
        help: """
            Publish what this uid compiles through the mount (repeatable; default: the daemon's own uid, root's for \
            a node service). A --shared-upper mount publishes its shared upper instead.
            """)
    var publishFromUid: [UInt32] = []

    @OptionGroup var options: PublishOptions
    @OptionGroup var limits: PublishLimitOptions

    var target: String? { setting(publishTo, "MCVFS_PUBLISH_TO") }

    var interval: Double {
        publishInterval ?? setting(nil, "MCVFS_PUBLISH_INTERVAL").flatMap(Double.init) ?? 60
    }

    func validate() throws {
        if interval <= 0 || !interval.isFinite {
            throw ValidationError("--publish-interval (or MCVFS_PUBLISH_INTERVAL) must be a positive number")
        }
        if target == nil && (options.signKey != nil || !publishFromUid.isEmpty) {
            throw ValidationError("--sign-key and --publish-from-uid need --publish-to")
        }
        if let target {
            let reference: ImageReference
            do { reference = try ImageReference(parsing: target) } catch {
                throw ValidationError("--publish-to: \(error)")
            }
            if !reference.isRepositoryOnly {
                throw ValidationError("--publish-to names a repository; tags come from each image's content")
            }
        }
    }

    /// The publisher for a mount whose uppers live under `upperRoot`; nil without `--publish-to`. Reads the signing
    /// key now, so a wrong password fails the mount instead of every publish.
    /// - Parameters:
    ///   - images: the images the mount serves now (a refreshed mount serves more over time).
    ///   - provider: the mount's layer provider, which reads their indexes.
    func publisher(
        global: GlobalOptions, layout: CacheLayout, upperRoot: String?, isolation: OverlayFileSystem.Isolation,
        images: @escaping @Sendable () -> [CacheImage], provider: any LayerProvider
    ) throws -> AutoPublisher? {
        guard let target else { return nil }
        guard let upperRoot else { throw ValidationError("--publish-to needs a writable mount (not --read-only)") }
        let reference = try ImageReference(parsing: target)
        let uids = isolation == .shared ? [] : publishFromUid
        let uppers = try UpperSelection.uppers(root: upperRoot, isolation: isolation, caller: getuid(), uids: uids)
        let signing = try options.signing(for: reference)
        let job = PublishJob(
            uppers: uppers, ledger: PublishLedger(layout: layout, repository: reference.repositoryName),
            publisher: options.publisher(reference, client: try global.client(for: reference), signing: signing),
            limits: try limits.limits())
        let keys = ProvidedKeys()
        return AutoPublisher(
            job: job, interval: .milliseconds(Int64(interval * 1000)),
            status: AutoPublisher.Status(
                repository: reference.repositoryName, intervalSeconds: interval, uppers: uppers,
                signingKey: signing.map { "sha256:\($0.key.publicKey.fingerprint)" }),
            provided: {
                let (provided, unread) = keys.keys(of: images(), provider: provider)
                for problem in unread { Log.warning("publish: cannot read the kernels of \(problem)") }
                return provided
            }, log: .process)
    }
}
