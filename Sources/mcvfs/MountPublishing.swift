import ArgumentParser
import MountService
import OCI

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

    /// The mount's publishing; nil without `--publish-to`. Its signing key is read by `signing(_:)`, once the
    /// configuration is known to be valid.
    func configuration() throws -> MountConfiguration.Publishing? {
        guard let target else { return nil }
        return MountConfiguration.Publishing(
            repository: try ImageReference(parsing: target), interval: duration(seconds: interval),
            uids: publishFromUid, options: options.publishing(signing: nil), limits: try limits.limits())
    }

    /// Reads the signing key into `publishing` (asking its password), before the mount: a wrong password then
    /// fails the mount instead of every publish.
    func signing(_ publishing: inout MountConfiguration.Publishing?) throws {
        guard let repository = publishing?.repository else { return }
        publishing?.options.signing = try options.signing(for: repository)
    }
}
