import BlobCache
import GPU
import NodeService
import OCI
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
            allowOther: false)
    }

    @Test func aMirrorAddsItsOneTryToTheOperationBudget() throws {
        let directory = try TemporaryDirectory()
        let connections = Connections()
        let direct = try configuration(.origin, connections: connections, in: directory)
        let mirrored = try configuration(.mirrored(host: "mirror.test"), connections: connections, in: directory)
        // Two tries at the origin stalling 2 s each, then the mirror's one, plus a second for backoff and local work.
        #expect(direct.registries.operationBudget == .seconds(5))
        #expect(mirrored.registries.operationBudget == .seconds(7))
        #expect(
            mirrored.registries.operationBudget == RegistryPolicy(stall: .seconds(2)).operationBudget(mirrored: true))
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
