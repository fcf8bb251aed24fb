import BlobCache
import GPU
import NodeService
import OCI
import Publishing
import Registry
import Synchronization
import TestSupport
import Testing

@testable import MountService

/// The mount's configuration derives what must agree: each client's tries from its role, and the time budget of a
/// filesystem operation from those tries and the stall limit.
@Suite struct MountConfigurationTests {
    struct NoPolicy: CatalogPolicy {
        func applies(to reference: ImageReference) throws -> Bool { false }
        func enforce(on catalog: inout Catalog, reference: ImageReference, client: RegistryClient?) throws {}
    }

    /// Clients made for the mount, as (registry, tries).
    final class Connections: Sendable {
        let made = Mutex<[String: Int]>([:])

        var connect: @Sendable (ImageReference, RegistryOptions) throws -> RegistryClient {
            { [self] reference, options in
                self.made.withLock { $0[reference.registry] = options.retry.attempts }
                return try RegistryClient(
                    registry: reference.registry, transport: InMemoryRegistry(host: reference.registry),
                    options: options)
            }
        }
    }

    func configuration(
        _ source: MountConfiguration.Registries.Source, connections: Connections, in directory: TemporaryDirectory
    ) throws -> MountConfiguration {
        MountConfiguration(
            reference: try ImageReference(parsing: "origin.test/org/cache"), mountpoint: directory.file("mnt"),
            cache: try CacheLayout(root: directory.file("cache")),
            registries: .init(
                policy: RegistryPolicy(stall: .seconds(2)), plainHTTP: true, source: source,
                connect: connections.connect),
            selection: ResolvedSelection(scope: .all), policy: NoPolicy(), verifies: false, writes: .readOnly,
            allowOther: false, prefetch: .all, retryDelay: .seconds(5), directIOFrom: nil, readAheadKiB: 0)
    }

    @Test func aMirrorAddsItsOneTryToTheOperationBudget() throws {
        let directory = try TemporaryDirectory()
        let connections = Connections()
        let direct = try configuration(.origin, connections: connections, in: directory)
        let mirrored = try configuration(.mirrored(host: "mirror.test"), connections: connections, in: directory)
        // Two tries at the origin stalling 2 s each, then the mirror's one, plus a second for backoff and local work.
        #expect(direct.registries.operationBudget == .seconds(5))
        #expect(mirrored.registries.operationBudget == .seconds(7))
    }

    @Test func eachClientOfTheMountTriesAsItsRoleAllows() throws {
        let directory = try TemporaryDirectory()
        let connections = Connections()
        let mount = RepositoryMount(
            try configuration(.mirrored(host: "mirror.test"), connections: connections, in: directory), log: .silent)
        let upstream = try mount.upstream()
        #expect(upstream.mirror?.host == "mirror.test")
        #expect(connections.made.withLock { $0 } == ["origin.test": 2, "mirror.test": 1])
    }

    @Test func anOfflineMountMakesNoClient() throws {
        let directory = try TemporaryDirectory()
        let connections = Connections()
        let upstream = try RepositoryMount(
            try configuration(.offline, connections: connections, in: directory), log: .silent
        ).upstream()
        #expect(upstream.isOffline)
        #expect(connections.made.withLock { $0 }.isEmpty)
    }

    @Test func theSignatureWarningNamesWhatTheMountDoesAndTheFix() {
        #expect(MountConfiguration.signatureWarning(refreshes: true, publishes: true, verifies: true) == nil)
        #expect(MountConfiguration.signatureWarning(refreshes: false, publishes: false, verifies: false) == nil)
        let warning = MountConfiguration.signatureWarning(refreshes: false, publishes: true, verifies: false)
        #expect(warning?.hasPrefix("this mount publishes with no signature policy") == true)
        #expect(warning?.contains("--key PUBLIC_KEY") == true)
        #expect(warning?.contains("within a refresh") == false)
    }

    /// What cannot work whatever the registry says is refused before anything is read: publishing with no uppers,
    /// refresh asked for one image or offline. Set for every mount of a node (not asked), refresh is left off.
    @Test func aMountThatCannotWorkIsRefusedBeforeAnythingIsRead() throws {
        let directory = try TemporaryDirectory()
        let connections = Connections()
        var tagged = try configuration(.origin, connections: connections, in: directory)
        tagged.reference = try ImageReference(parsing: "origin.test/org/cache:v1")
        tagged.refresh = .init(interval: .seconds(60), required: true)
        let oneImage = "refreshes a repository's tags; origin.test/org/cache:v1 names one image"
        #expect(throws: RepositoryMount.Refusal.refreshUnusable(reason: oneImage)) { try tagged.validate() }
        tagged.refresh?.required = false
        try tagged.validate()

        var offline = try configuration(.offline, connections: connections, in: directory)
        offline.refresh = .init(interval: .seconds(60), required: true)
        let needsRegistry = "needs the registry, and the mount is --offline"
        #expect(throws: RepositoryMount.Refusal.refreshUnusable(reason: needsRegistry)) { try offline.validate() }

        var readOnly = try configuration(.origin, connections: connections, in: directory)
        readOnly.publishing = .init(
            repository: try ImageReference(parsing: "origin.test/org/fleet"), interval: .seconds(60), uids: [],
            options: .init(), limits: PublishLimits())
        #expect(throws: RepositoryMount.Refusal.publishingNeedsUppers) { try readOnly.validate() }
        readOnly.writes = .overlay(root: directory.file("upper"), isolation: .perUser)
        try readOnly.validate()
        #expect(connections.made.withLock { $0 }.isEmpty)
    }

    @Test func refusalsNameTheFlagThatFixesThem() {
        #expect(
            RepositoryMount.Refusal.publishingNeedsUppers.description
                == "--publish-to needs a writable mount (not --read-only)")
        #expect(RepositoryMount.Refusal.readOnlyVLLM(image: "v").description.contains("Mount without --read-only"))
        #expect(RepositoryMount.Refusal.refreshUnusable(reason: "r").description == "--refresh-interval r")
    }

    @Test func onlyAnOverlayHasUppers() {
        #expect(MountConfiguration.Writes.readOnly.upperRoot == nil)
        #expect(MountConfiguration.Writes.overlay(root: "/u", isolation: .shared).upperRoot == "/u")
    }
}
