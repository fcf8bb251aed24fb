import BlobCache
import GPU
import ImageFS
import MetricsEndpoint
import NodeService
import OCI
import Publishing
import Registry

/// A mount as its flags describe it: everything the node needs to build and serve it (`RepositoryMount`). The
/// settings that must agree are derived here, once: each registry client's tries from its role, the time budget of
/// every filesystem operation from those tries, the stall limit and the mirror; and what cannot work whatever the
/// registry says is refused here (`validate()`), before anything is read.
public struct MountConfiguration: Sendable {
    /// Where the mount reads the repository from, and how it makes a client for a registry.
    public struct Registries: Sendable {
        public enum Source: Sendable, Equatable {
            /// The reference's own registry.
            case origin
            /// A mirror holding the same repository (`host[:port]`), tried first; the origin when it fails.
            case mirrored(host: String)
            /// No registry: the recorded catalog and the cached layers only.
            case offline
        }

        public var policy: RegistryPolicy
        public var plainHTTP: Bool
        public var source: Source
        /// A client for `reference`'s registry with `options` (credentials, TLS and the transport are the caller's).
        public var connect: @Sendable (_ reference: ImageReference, _ options: RegistryOptions) throws -> RegistryClient

        public init(
            policy: RegistryPolicy, plainHTTP: Bool, source: Source,
            connect: @escaping @Sendable (ImageReference, RegistryOptions) throws -> RegistryClient
        ) {
            self.policy = policy
            self.plainHTTP = plainHTTP
            self.source = source
            self.connect = connect
        }

        /// A client in `role`, with the tries and timeouts the policy gives that role.
        public func client(for reference: ImageReference, role: RegistryPolicy.Role) throws -> RegistryClient {
            try connect(reference, policy.options(role, plainHTTP: plainHTTP))
        }

        /// Every try an operation may make, each stalling at most the policy's stall: whatever a registry does,
        /// a filesystem operation answers within it.
        public var operationBudget: Duration {
            if case .mirrored = source { return policy.operationBudget(mirrored: true) }
            return policy.operationBudget(mirrored: false)
        }
    }

    /// What workloads may write through the mount.
    public enum Writes: Sendable, Equatable {
        /// Every write answers EROFS.
        case readOnly
        /// Writes go to uppers under `root`: one per uid, or one shared by all.
        case overlay(root: String, isolation: OverlayFileSystem.Isolation)

        /// Where the uppers are; nil for a read-only mount.
        public var upperRoot: String? {
            guard case .overlay(let root, _) = self else { return nil }
            return root
        }
    }

    /// Live refresh of a repository's tags.
    public struct Refresh: Sendable {
        public var interval: Duration
        /// Asked for this mount (one that cannot refresh is an error), rather than set for every mount of a node
        /// (then it is left off with a note).
        public var required: Bool

        public init(interval: Duration, required: Bool) {
            self.interval = interval
            self.required = required
        }
    }

    /// Automatic publishing of what is compiled through the mount.
    public struct Publishing: Sendable {
        /// `registry/repository`: tags come from each image's content.
        public var repository: ImageReference
        public var interval: Duration
        /// Uids whose uppers are published (empty: the daemon's own); a shared upper is published whole.
        public var uids: [UInt32]
        /// Tag prefix and signing key (read before the mount, so a wrong password fails the mount).
        public var options: ImagePublisher.Options
        public var limits: PublishLimits

        public init(
            repository: ImageReference, interval: Duration, uids: [UInt32], options: ImagePublisher.Options,
            limits: PublishLimits
        ) {
            self.repository = repository
            self.interval = interval
            self.uids = uids
            self.options = options
            self.limits = limits
        }
    }

    public var reference: ImageReference
    public var mountpoint: String
    /// The cache root as consuming processes see it (a pod's hostPath); group files name children under it.
    public var consumerRoot: String
    public var cache: CacheLayout
    /// The blob cache's bound; nil for none.
    public var cacheMaxSize: Int64?
    public var registries: Registries
    /// The GPUs whose targets select images, and the Triton version that narrows them further.
    public var selection: ResolvedSelection
    public var narrow: @Sendable (inout Catalog) -> Void = { _ in }
    /// The signature policy every resolved catalog passes.
    public var policy: any CatalogPolicy
    /// Whether `policy` checks signatures: a mount that refreshes or publishes without that is open to anyone who
    /// can push to the registry (`signatureWarning`).
    public var verifies: Bool
    public var prefetch: PrefetchMode
    public var writes: Writes
    /// Other uids may use the mount (pods).
    public var allowOther: Bool
    /// How long a failed image stays absent before an access retries it.
    public var retryDelay: Duration
    /// Files at least this big are served with direct I/O; nil: none.
    public var directIOFrom: Int64?
    /// The mount's kernel read-ahead; 0 keeps the kernel's.
    public var readAheadKiB: Int
    /// Take over a live mcvfs mount at the mountpoint without a gap.
    public var replace = false
    /// Exists exactly while this daemon's mount serves the mountpoint.
    public var readyFile: String?
    public var metricsListen: MetricsServer.Address?
    public var refresh: Refresh?
    public var publishing: Publishing?
    /// Log every error reply with its operation (debug).
    public var traceErrors = false

    /// The defaults of the settings that have one are the command line's (`mcvfs mount --help`), set there.
    public init(
        reference: ImageReference, mountpoint: String, consumerRoot: String? = nil, cache: CacheLayout,
        registries: Registries, selection: ResolvedSelection, policy: any CatalogPolicy, verifies: Bool,
        writes: Writes, allowOther: Bool, prefetch: PrefetchMode, retryDelay: Duration, directIOFrom: Int64?,
        readAheadKiB: Int
    ) {
        self.prefetch = prefetch
        self.retryDelay = retryDelay
        self.directIOFrom = directIOFrom
        self.readAheadKiB = readAheadKiB
        self.reference = reference
        self.mountpoint = mountpoint
        self.consumerRoot = consumerRoot ?? mountpoint
        self.cache = cache
        self.registries = registries
        self.selection = selection
        self.policy = policy
        self.verifies = verifies
        self.writes = writes
        self.allowOther = allowOther
    }

    /// Refuses what cannot work whatever the registry says, before anything is read or fetched: publishing with
    /// no uppers to harvest; live refresh asked for a mount that cannot refresh.
    public func validate() throws(RepositoryMount.Refusal) {
        if publishing != nil && writes == .readOnly { throw .publishingNeedsUppers }
        if let refresh, refresh.required, let reason = refreshUnusable { throw .refreshUnusable(reason: reason) }
    }

    /// Why live refresh cannot work for this mount; nil when it can.
    var refreshUnusable: String? {
        if !reference.isRepositoryOnly { return "refreshes a repository's tags; \(reference) names one image" }
        if registries.source == .offline { return "needs the registry, and the mount is --offline" }
        return nil
    }

    /// What a mount that refreshes or publishes with no signature policy is open to, and the fix; nil otherwise.
    /// Said on the terminal before a mount goes to the background, and by the mount in its log, status and
    /// metrics.
    public static func signatureWarning(refreshes: Bool, publishes: Bool, verifies: Bool) -> String? {
        guard !verifies, refreshes || publishes else { return nil }
        let loop = [refreshes ? "refreshes" : nil, publishes ? "publishes" : nil].compactMap { $0 }
        return "this mount \(loop.joined(separator: " and ")) with no signature policy: anyone who can push to the "
            + "registry reaches it\(refreshes ? " within a refresh" : ""); add --key PUBLIC_KEY, "
            + "--certificate-identity(-regexp) or --policy FILE (docs/security.md)"
    }
}

extension ResolvedSelection {
    /// Which kernels of the images the filesystem shows: those whose targets the selection has.
    public var kernelFilter: KernelFilter {
        switch scope {
        case .all: return .all
        case .targets(let targets): return .targets(targets)
        }
    }
}
