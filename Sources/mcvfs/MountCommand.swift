import ArgumentParser
import BlobCache
import CacheRepository
import ContentHash
import FUSEBridge
import Foundation
import Glibc
import ImageFS
import NodeService
import OCI
import Registry
import TarIndex

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
    @OptionGroup(title: "Node service") var service: ServiceOptions
    @OptionGroup var trust: TrustOptions

    @Flag(help: "Stay attached (systemd, containers); by default mcvfs returns once the mount serves.")
    var foreground = false

    @Option(
        help:
            "The cache root as consuming processes see it, when they mount this directory at another path (a pod's hostPath). Group files name children under it. Default: the mountpoint."
    )
    var consumerRoot: String?

    @Flag(
        inversion: .prefixedNo,
        help: "Let other users (pods running as other uids) use the mount. Default: on when run as root.")
    var allowOther: Bool?

    @Option(help: "Seconds a failed image load answers EIO at once before the next access retries it.")
    var retryDelay: Double = 5

    @Flag(help: "Refuse every write with EROFS (Triton then cannot store kernels it compiles).")
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

    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String
    @Argument(help: "An existing empty directory.") var mountpoint: String

    func run() throws {
        if !foreground && ProcessInfo.processInfo.environment[Daemon.childVariable] == nil {
            try Daemon.startInBackground(arguments: Array(CommandLine.arguments.dropFirst()) + ["--foreground"])
            return
        }
        let daemon = Daemon()
        do {
            try serve(daemon)
        } catch {
            Log.error("\(error)")
            daemon.failed("\(error)")
            throw ExitCode.failure
        }
    }

    private func serve(_ daemon: Daemon) throws {
        let ref = try ImageReference(parsing: reference)
        let mountpoint = URL(fileURLWithPath: self.mountpoint).standardizedFileURL.path
        let cacheRoot = try global.cacheRoot()
        Log.configure(
            level: max(global.logLevel, .info), stderr: !daemon.isChild,
            file: cacheRoot.appendingPathComponent("logs/mount-\(Daemon.logName(for: mountpoint)).log").path,
            syslog: ProcessInfo.processInfo.environment["JOURNAL_STREAM"] == nil)  // journald reads stderr already
        try Mountpoint.prepare(mountpoint)
        let selection = try gpu.resolve()
        let store = try global.store()
        let node = try NodeRuntime(
            options: service, global: global, reference: ref, mountpoint: mountpoint, store: store)
        var catalog = try node.catalog(selection: selection)
        if let client = node.origin ?? node.mirrorClient {
            try trust.enforce(on: &catalog, reference: ref, client: client)
        } else if try trust.policy(for: ref) != nil {
            throw ValidationError("signatures cannot be verified offline: drop --offline or the trust policy")
        }
        for entry in catalog.entries {
            Log.info(
                entry.isUsed
                    ? "using \(entry.name) \(entry.digest?.short ?? "")"
                    : "skipping \(entry.name): \(entry.skipReason ?? "")")
        }
        let metrics = FetchMetrics()
        let provider = try node.provider(catalog: catalog, metrics: metrics)
        let owner = (uid: getuid(), gid: getgid())
        let allowOther = self.allowOther ?? (owner.uid == 0)
        let options = ImageFileSystem.Options(
            tree: ImageTreeBuilder.Options(
                consumerRoot: consumerRoot ?? mountpoint, filter: selection.kernelFilter, worldReadable: allowOther),
            owner: owner, retryDelay: .milliseconds(Int64(retryDelay * 1000)),
            directIOFrom: directIOFrom == "off" ? nil : try parsedSize(directIOFrom))
        let status = StatusBox()
        let images = ImageFileSystem(
            images: catalog.used, provider: provider, options: options, status: { status.render() })
        let upperRoot = upper ?? cacheRoot.appendingPathComponent("upper/\(Self.identity(of: ref))").path
        let isolation: OverlayFileSystem.Isolation = sharedUpper ? .shared : .perUser
        var overlay: OverlayFileSystem?
        if !readOnly {
            try FileManager.default.createDirectory(
                atPath: (upperRoot as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            overlay = try OverlayFileSystem(
                lower: images,
                options: .init(
                    upperRoot: upperRoot, isolation: isolation,
                    consumerRoot: consumerRoot ?? mountpoint),
                owner: owner)
        }
        let fileSystem: any FileSystem = overlay ?? images
        status.set(
            MountStatus.Source(
                reference: ref.description, mountpoint: mountpoint, consumerRoot: consumerRoot ?? mountpoint,
                selection: selection.description, catalog: catalog, metrics: metrics, fileSystem: images,
                upperRoot: readOnly ? nil : upperRoot,
                isolation: readOnly ? nil : isolation.rawValue, overlay: overlay, service: node.status))
        let session = FUSESession(
            fileSystem: fileSystem,
            options: FUSESession.Options(
                mountpoint: mountpoint, fsName: "mcvfs#\(ref)", allowOther: allowOther,
                traceErrors: global.logLevel == .debug),
            log: { Log.warning($0) }, onError: node.fuseErrors.record,
            onConnected: { [readAheadKib] in
                guard readAheadKib > 0 else { return }
                do { try ReadAhead.set(kibibytes: readAheadKib, mountpoint: mountpoint) } catch {
                    Log.info("read-ahead left at the kernel's default: \(error)")
                }
            })
        try session.mount()
        Log.info(
            "mounted \(ref) at \(mountpoint): \(catalog.used.count) image(s) used, \(catalog.skipped.count) skipped")
        let message =
            "mounted \(ref) at \(mountpoint) (\(catalog.used.count) image(s), \(catalog.skipped.count) skipped)"
        node.serving(message)
        daemon.ready(message: message)
        try session.run(stopping: node.stopping)
        images.persistPrefetched()
        node.finished()
        Log.info("unmounted \(mountpoint)")
    }
}

extension MountCommand {
    /// Names a mount's uppers after what is mounted, not where: a remount of the same reference at another
    /// path finds the kernels compiled before.
    static func identity(of reference: ImageReference) -> String {
        let readable = reference.description.map { $0.isLetter || $0.isNumber ? $0 : "_" }
        let hash = SHA256Hasher.digest(Data(reference.description.utf8)).hex.prefix(12)
        return String(readable.prefix(80)) + "-" + hash
    }
}

extension LayerFetcher: LayerProvider {
    public func index(of layer: Descriptor, in image: CacheImage) throws -> LayerIndex {
        try index(of: layer)
    }

    public func source(of content: Digest) throws -> FileSource {
        switch try fetch(content) {
        case .stored(let path): return .file(path: path)
        case .held(let data): return .memory(data)
        }
    }
}
