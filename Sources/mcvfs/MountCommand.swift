import ArgumentParser
import BlobCache
import Foundation
import Glibc
import MountService
import NodeService
import OCI

extension PrefetchMode: ExpressibleByArgument {}

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a registry repository (or one image) as a Triton cache directory.",
        discussion: """
            Without a tag every cache image in the repository whose targets match the selected GPUs is used, merged \
            in tag order (the first tag that has a file wins it). Tags are resolved to digests once and pinned for \
            the mount's life. No layer is downloaded at mount time: the first access below the root fetches and \
            verifies them.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var gpu: GPUOptions
    @OptionGroup var tritonVersion: TritonVersionOptions
    @OptionGroup(title: "Node service") var service: ServiceOptions
    @OptionGroup var trust: TrustOptions
    @OptionGroup(title: "Publishing") var publishing: MountPublishingOptions
    @OptionGroup(title: "Live refresh") var refresh: MountRefreshOptions

    @Flag(help: "Stay attached (systemd, containers); by default mcvfs returns once the mount serves.")
    var foreground = false

    @Flag(
        help: """
            Take over a live mcvfs mount at MOUNTPOINT without a gap: mount beneath it, then detach it (its daemon \
            finishes what is in flight, and is stopped when it runs in this PID namespace). For upgrades: \
            `systemctl reload`, rolling DaemonSet updates.
            """)
    var replace = false

    @Option(
        help: """
            A file to create once this daemon's mount serves MOUNTPOINT, and to remove when it no longer does \
            (replaced or stopped): a readiness check that cannot mistake the mount it replaces for its own.
            """)
    var readyFile: String?

    @Option(
        help:
            "The cache root as consuming processes see it, when they mount this directory at another path (a pod's hostPath). Group files name children under it. Default: the mountpoint."
    )
    var consumerRoot: String?

    @Flag(
        inversion: .prefixedNo,
        help: "Let other users (pods running as other uids) use the mount. Default: on when run as root.")
    var allowOther: Bool?

    @Option(
        help:
            "Seconds a failed image stays absent (its names answer ENOENT at once, unless another image holds them) before an access retries it, in the background."
    )
    var retryDelay: Double = 5

    @Flag(
        help:
            "Refuse every write with EROFS (Triton then cannot store kernels it compiles; vLLM caches are refused, since vLLM writes lock files even on a hit)."
    )
    var readOnly = false

    @Flag(
        help: "One upper directory for all users instead of one per uid (users can then affect each other's kernels).")
    var sharedUpper = false

    @Option(help: "Directory holding the writable uppers (default: <cache-dir>/upper/<mount identity>).")
    var upper: String?

    @Option(
        help:
            "Kernel read-ahead for the mount in KiB (needs root; 0 keeps the kernel's 128). Larger windows let sequential reads of big kernels reach mcvfs in fewer, larger requests."
    )
    var readAheadKib: Int = 4096

    @Option(
        help: """
            Serve files of at least this size (e.g. 8M) with direct I/O: one copy per read and no second copy in \
            the page cache; such files can be mapped privately (dlopen) but not MAP_SHARED. 'off' disables it.
            """
    )
    var directIOFrom: String = "8M"

    @Option(
        help: """
            What to fetch of eStargz layers ahead of use: none; hot (a layer's prioritized entries, its hot set, in \
            one request at the first lookup); all (from the mount on: each eStargz layer's TOC, the hot set, then \
            the rest of each layer in the background, below on-demand reads, within --cache-max-size).
            """)
    var prefetch: PrefetchMode = .all

    @Flag(
        help: """
            Print JSON once the mount serves: {"reference", "mountpoint", "pid", "images": [{"name", "digest"}], \
            "skipped": [{"name", "reason"}]}.
            """)
    var json = false

    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String
    @Argument(
        help: """
            A directory: created when missing (its parent must exist); one that holds files is mounted over, hiding \
            them until unmounted, with a warning.
            """)
    var mountpoint: String

    func run() throws {
        if !foreground && ProcessInfo.processInfo.environment[Daemon.childVariable] == nil {
            // The daemon's stderr is /dev/null: the terminal hears it here.
            if let warning = MountConfiguration.signatureWarning(
                refreshes: refresh.refreshInterval != nil, publishes: publishing.target != nil,
                verifies: trust.isEnabled)
            {
                Log.warning(warning)
            }
            try Daemon.startInBackground(arguments: Array(CommandLine.arguments.dropFirst()) + ["--foreground"])
            return
        }
        let daemon = Daemon()
        do {
            try serve(daemon)
        } catch {
            Log.error(describe(error))
            daemon.failed(describe(error))
            throw ExitCode.failure
        }
    }

    private func serve(_ daemon: Daemon) throws {
        let mountpoint = URL(fileURLWithPath: self.mountpoint).standardizedFileURL.path
        let layout = try global.cache.layout()
        // First, so that what resolving the flags says (no GPU found, a key's password) is in the mount's log.
        Log.configure(
            level: max(global.logLevel, .info), stderr: !daemon.isChild,
            file: layout.log(named: "mount-\(Daemon.logName(for: mountpoint)).log"),
            // journald reads stderr already, unless this is a background daemon: its stderr is /dev/null.
            syslog: daemon.isChild || ProcessInfo.processInfo.environment["JOURNAL_STREAM"] == nil)
        var configuration = try self.configuration(mountpoint: mountpoint, layout: layout)
        // Refused before a password is asked for a key the mount could not use.
        try configuration.validate()
        try publishing.signing(&configuration.publishing)
        let reference = configuration.reference.description
        try RepositoryMount(configuration, log: .process).run(
            message: { catalog in
                json
                    ? try Self.readyJSON(reference: reference, mountpoint: mountpoint, catalog: catalog)
                    : "mounted \(reference) at \(mountpoint) "
                        + "(\(catalog.used.count) image(s), \(catalog.skipped.count) skipped)"
            },
            serving: { message in
                if json && !daemon.isChild { print(message) }
                daemon.ready(message: message)
            })
    }

    /// The mount these flags describe, at `mountpoint` (standardized) with its cache in `layout`.
    func configuration(mountpoint: String, layout: CacheLayout) throws -> MountConfiguration {
        let reference = try ImageReference(parsing: self.reference)
        let upperRoot = upper ?? layout.uppers(of: reference)
        var configuration = MountConfiguration(
            reference: reference, mountpoint: mountpoint, consumerRoot: consumerRoot, cache: layout,
            registries: .init(
                policy: global.registryPolicy, plainHTTP: global.plainHTTP, source: service.source,
                connect: global.connect),
            selection: try gpu.resolve(), policy: trust.catalogPolicy(layout), verifies: trust.isEnabled,
            writes: readOnly ? .readOnly : .overlay(root: upperRoot, isolation: sharedUpper ? .shared : .perUser),
            allowOther: allowOther ?? (getuid() == 0), prefetch: prefetch, retryDelay: duration(seconds: retryDelay),
            directIOFrom: directIOFrom == "off" ? nil : try parsedSize(directIOFrom), readAheadKiB: readAheadKib)
        configuration.narrow = tritonVersion.apply
        configuration.cacheMaxSize = service.maxSize
        configuration.metricsListen = service.metricsAddress
        configuration.replace = replace
        configuration.readyFile = readyFile
        configuration.refresh = refresh.configuration
        configuration.publishing = try publishing.configuration()
        configuration.traceErrors = global.logLevel == .debug
        return configuration
    }
}

extension MountCommand {
    struct ReadyOutput: Encodable {
        struct Skipped: Encodable {
            var name: String
            var reason: String
        }

        var reference: String
        var mountpoint: String
        var pid: Int32
        var images: [ImageOutput]
        var skipped: [Skipped]
    }

    /// `--json`'s one line: what the mount serves, named as `ls` and `status` name images.
    static func readyJSON(reference: String, mountpoint: String, catalog: Catalog) throws -> String {
        let output = ReadyOutput(
            reference: reference, mountpoint: mountpoint, pid: getpid(),
            images: catalog.entries.compactMap { entry in
                entry.isUsed ? ImageOutput(name: entry.name, digest: entry.digest?.description ?? "") : nil
            },
            skipped: catalog.skipped.map { ReadyOutput.Skipped(name: $0.name, reason: $0.skipReason ?? "") })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(output), as: UTF8.self)
    }
}
