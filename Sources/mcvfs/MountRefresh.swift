import ArgumentParser
import MountService

/// `mount --refresh-interval`: a repository mount picks up new and moved tags while it serves.
struct MountRefreshOptions: ParsableArguments {
    @Option(
        name: .customLong("refresh-interval"),
        help: """
            For a repository mount (no tag): re-list its tags every SECONDS, and add the new (or moved) images \
            that suit the GPUs and pass the signature policy to the served tree, without a remount. Served files \
            never change; names that did not exist are found after the next refresh. Default: \
            $MCVFS_REFRESH_INTERVAL (empty: off).
            """)
    var refreshIntervalOption: Double?

    /// `--refresh-interval`, else `MCVFS_REFRESH_INTERVAL`.
    var refreshInterval: Double? {
        refreshIntervalOption ?? setting(nil, "MCVFS_REFRESH_INTERVAL").flatMap(Double.init)
    }

    func validate() throws {
        if setting(nil, "MCVFS_REFRESH_INTERVAL") != nil && refreshIntervalOption == nil && refreshInterval == nil {
            throw ValidationError("MCVFS_REFRESH_INTERVAL must be a number of seconds")
        }
        if let refreshInterval, refreshInterval <= 0 || !refreshInterval.isFinite {
            throw ValidationError("--refresh-interval must be a positive number of seconds")
        }
    }

    /// The mount's live refresh; nil without `--refresh-interval` (or `MCVFS_REFRESH_INTERVAL`). The option asks for
    /// it (a mount that cannot refresh is an error); the variable sets it for every mount of a node.
    var configuration: MountConfiguration.Refresh? {
        refreshInterval.map {
            MountConfiguration.Refresh(
                interval: duration(seconds: $0), required: refreshIntervalOption != nil)
        }
    }
}
