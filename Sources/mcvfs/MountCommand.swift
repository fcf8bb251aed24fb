import ArgumentParser
import FUSEBridge
import FUSEMount
import Foundation
import Glibc
import ImageFS
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

    /// How long the last publish at unmount may take: within systemd's `TimeoutStopSec=30` and a pod's grace period.
    static let publishAtUnmountBudget = Duration.seconds(20)

    /// What a mount that refreshes or publishes with no signature policy is open to, and the fix; nil otherwise.
    static func signatureWarning(refreshes: Bool, publishes: Bool, verifies: Bool) -> String? {
        guard !verifies, refreshes || publishes else { return nil }
        let loop = [refreshes ? "refreshes" : nil, publishes ? "publishes" : nil].compactMap { $0 }
        return "this mount \(loop.joined(separator: " and ")) with no signature policy: anyone who can push to the "
            + "registry reaches it\(refreshes ? " within a refresh" : ""); add --key PUBLIC_KEY, "
            + "--certificate-identity(-regexp) or --policy FILE (docs/security.md)"
    }

    func run() throws {
        if !foreground && ProcessInfo.processInfo.environment[Daemon.childVariable] == nil {
            // The daemon's stderr is /dev/null: the terminal hears it here.
            if let warning = Self.signatureWarning(
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
        let ref = try ImageReference(parsing: reference)
        let mountpoint = URL(fileURLWithPath: self.mountpoint).standardizedFileURL.path
        let layout = try global.cache.layout()
        Log.configure(
            level: max(global.logLevel, .info), stderr: !daemon.isChild,
            file: layout.log(named: "mount-\(Daemon.logName(for: mountpoint)).log"),
            // journald reads stderr already, unless this is a background daemon: its stderr is /dev/null.
            syslog: daemon.isChild || ProcessInfo.processInfo.environment["JOURNAL_STREAM"] == nil)
        let placement = try MountPlacement.inspect(mountpoint, replace: replace, log: .process)
        let selection = try gpu.resolve()
        let node = try NodeRuntime(
            upstream: try service.upstream(for: ref, global: global),
            cache: try NodeCache(layout: layout, maxSize: service.maxSize, log: .process), mountpoint: mountpoint,
            metricsListen: service.metricsAddress, log: .process)
        let policy = trust.catalogPolicy(layout)
        let catalog = try node.catalogs.resolve(selection, narrow: tritonVersion.apply, policy: policy)
        for entry in catalog.entries {
            Log.info(
                entry.isUsed
                    ? "using \(entry.name) \(entry.digest?.short ?? "")"
                    : "skipping \(entry.name): \(entry.skipReason ?? "")")
        }
        if let warning = catalog.nothingSelectedWarning(selection: selection.description) { Log.warning(warning) }
        if readOnly, let image = catalog.used.first(where: { $0.cacheLabels.kinds.contains(.vllm) }) {
            throw ReadOnlyVLLM(image: image.name)
        }
        let environment = catalog.consumerEnvironment(root: consumerRoot ?? mountpoint)
        if !environment.isEmpty {
            Log.info("consumers set " + environment.map { "\($0.name)=\($0.value)" }.joined(separator: " "))
        }
        let provider = try node.provider(for: catalog, prefetch: prefetch)
        let owner = (uid: getuid(), gid: getgid())
        let allowOther = self.allowOther ?? (owner.uid == 0)
        let budget = global.registryPolicy.operationBudget(mirrored: service.mirror != nil)
        let options = ImageFileSystem.Options(
            tree: ImageTreeBuilder.Options(
                consumerRoot: consumerRoot ?? mountpoint, filter: selection.kernelFilter, worldReadable: allowOther),
            owner: owner, retryDelay: .milliseconds(Int64(retryDelay * 1000)),
            directIOFrom: directIOFrom == "off" ? nil : try parsedSize(directIOFrom), operationBudget: budget,
            log: { Log.warning($0) })
        let status = MountStatusBoard()
        // Images this node never used before rank after those it did: a tag pushed while it was away adds KEYs.
        let firstSeen = FirstSeen(
            records: CatalogRecords(layout: layout), reference: ref.description, selection: selection.description,
            log: .process)
        let images = ImageFileSystem(
            images: catalog.used, batches: firstSeen.batches(of: catalog.used, pruning: true), provider: provider,
            options: options, status: { status.render(for: $0) })
        node.watch(images)
        let upperRoot = upper ?? layout.uppers(of: ref)
        let isolation: OverlayFileSystem.Isolation = sharedUpper ? .shared : .perUser
        var overlay: OverlayFileSystem?
        if !readOnly {
            try FileManager.default.createDirectory(
                atPath: (upperRoot as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            overlay = try OverlayFileSystem(
                lower: images,
                options: .init(
                    upperRoot: upperRoot, isolation: isolation,
                    consumerRoot: consumerRoot ?? mountpoint, log: { Log.warning($0) }),
                owner: owner)
        }
        let fileSystem: any FileSystem = overlay ?? images
        status.set(
            MountStatus.Source(
                reference: ref.description, mountpoint: mountpoint, consumerRoot: consumerRoot ?? mountpoint,
                selection: selection.description, catalog: catalog, metrics: node.metrics, fileSystem: images,
                upperRoot: readOnly ? nil : upperRoot,
                isolation: readOnly ? nil : isolation.rawValue, overlay: overlay, service: node.status))
        let refresher = try refresh.refresher(
            for: ref, catalog: catalog, node: node, selection: selection, narrow: tritonVersion.apply,
            policy: policy, fileSystem: images, firstSeen: firstSeen, status: status)
        let publisher = try publishing.publisher(
            global: global, layout: layout, upperRoot: readOnly ? nil : upperRoot, isolation: isolation,
            images: { images.images }, provider: provider)
        if let publisher { node.report(publishing: publisher) }
        if let warning = Self.signatureWarning(
            refreshes: refresher != nil, publishes: publisher != nil, verifies: trust.isEnabled)
        {
            Log.warning(warning)
            node.report(signatureWarning: warning)
        }
        // mcvfs attaches the connection itself (beneath a mount it replaces) and libfuse serves it through
        // /dev/fd/N; for a non-root user (nil), libfuse mounts it with fusermount3.
        let attached = try placement.attach(
            FUSEMount.Options(fsName: "mcvfs#\(ref)", allowOther: allowOther, uid: owner.uid, gid: owner.gid))
        let session = FUSESession(
            fileSystem: fileSystem,
            options: FUSESession.Options(
                mountpoint: attached?.libfuseMountpoint ?? mountpoint, fsName: "mcvfs#\(ref)", allowOther: allowOther,
                traceErrors: global.logLevel == .debug, operationBudget: budget),
            log: { Log.warning($0) }, onError: node.fuseErrors.record,
            onConnected: { [readAheadKib] in
                guard readAheadKib > 0 else { return }
                do { try ReadAhead.set(kibibytes: readAheadKib, mountpoint: mountpoint) } catch {
                    Log.info("read-ahead left at the kernel's default: \(error)")
                }
            })
        do { try session.mount() } catch {
            attached?.abandon()
            throw error
        }
        Log.info(
            "mounted \(ref) at \(mountpoint): \(catalog.used.count) image(s) used, \(catalog.skipped.count) skipped")
        // A DaemonSet mounts long before pods start: with everything prefetched, fetching starts now, not at the
        // first lookup.
        if prefetch == .all { images.indexLazyLayers() }
        let message =
            json
            ? try Self.readyJSON(reference: ref.description, mountpoint: mountpoint, catalog: catalog)
            : "mounted \(ref) at \(mountpoint) (\(catalog.used.count) image(s), \(catalog.skipped.count) skipped)"
        if json && !daemon.isChild { print(message) }
        node.serving(message, replacing: placement.replacesLiveMount)
        daemon.ready(message: message)
        refresher?.start()
        publisher?.start()
        placement.takeOver()
        let ready = readyFile.map(ReadyFile.init(path:))
        ready?.create(mountID: attached?.mountID ?? FUSEMount.topMountID(at: mountpoint) ?? 0)
        // A replaced mount's daemon is not stopping the service: its successor is (STOPPING=1 would stop both).
        let signal = try session.run(stopping: {
            ready?.remove()
            if !MountPlacement.isReplaced(attached) { node.stopping() }
        })
        // Our own mount only, if still on top: when stopped before the replacement detached it, or unreplaced.
        let replaced = MountPlacement.isReplaced(attached)
        attached?.detachIfTop()
        if replaced {
            Log.info("\(mountpoint) is served by a newer mount now")
            if signal == 0 && MountPlacement.waitsWhenReplaced { MountPlacement.waitForStop() }
        }
        refresher?.stop()
        // What was compiled since the last publish goes now (a successor serving the same uppers would only find
        // it published: the ledger's lock orders the two).
        publisher?.stop(within: Self.publishAtUnmountBudget)
        images.persistPrefetched()
        node.finished()
        Log.info("unmounted \(mountpoint)")
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

/// A read-only mount of a vLLM cache: refused, since vLLM could not start from it (docs/vllm.md, "Read-only").
struct ReadOnlyVLLM: Error, CustomStringConvertible {
    var image: String

    var description: String {
        "\(image) is a vLLM cache, and vLLM cannot use it read-only: torch Inductor opens "
            + "inductor_cache/locks/*.lock for writing even on a hit (EROFS). Mount without --read-only: what vLLM "
            + "writes goes to the caller's own upper and the image never changes"
    }
}
