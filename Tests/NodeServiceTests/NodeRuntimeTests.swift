import Foundation
import MetricsEndpoint
import OCI
import Testing

@testable import NodeService

/// A mount's node runtime: the lease lives from the provider to `finished()`, and status and metrics report what
/// the mount uses.
@Suite struct NodeRuntimeTests {
    let node: NodeFixture

    init() throws {
        node = try NodeFixture()
    }

    func runtime(metrics: Bool = false) throws -> NodeRuntime {
        try NodeRuntime(
            upstream: try node.upstream(), cache: try node.cache(maxSize: 1 << 30), mountpoint: "/mnt/triton",
            metricsListen: metrics ? try MetricsServer.Address(parsing: "127.0.0.1:0") : nil,
            notifier: SystemdNotifier(environment: [:]), log: node.log.log)
    }

    @Test func theMountsLeaseLastsUntilItIsFinished() throws {
        let runtime = try runtime()
        #expect(runtime.status(nil).lease == nil)
        let catalog = try runtime.catalogs.resolve(NodeFixture.selection)
        let provider = try runtime.provider(for: catalog)
        let lease = try #require(runtime.status(nil).lease)
        #expect(FileManager.default.fileExists(atPath: lease))
        #expect(provider.lease.lease.holder == "mount /mnt/triton")
        runtime.finished()
        #expect(runtime.status(nil).lease == nil)
        #expect(!FileManager.default.fileExists(atPath: lease))
    }

    /// An activity above the node (automatic publishing) reports through the runtime, which asks it for the
    /// section of each viewer: a user's status.json carries only what that activity shows that user.
    @Test func anActivityReportsItsSectionPerViewerAndItsFamilies() throws {
        struct Activity: MountActivity {
            func statusSection(for viewer: UInt32?) -> JSONValue? { .string(viewer.map { "user \($0)" } ?? "all") }
            var metricFamilies: [MetricFamily] {
                [.single("mcvfs_activity_runs_total", help: "Runs.", kind: .counter, value: 2)]
            }
        }
        let runtime = try runtime()
        #expect(runtime.status(nil).publishing == nil)
        runtime.report(publishing: Activity())
        #expect(runtime.status(nil).publishing == .string("all"))
        #expect(runtime.status(1000).publishing == .string("user 1000"))
        #expect(NodeMetrics.families(runtime.metricsSample).contains { $0.name == "mcvfs_activity_runs_total" })
    }

    @Test func statusAndMetricsDescribeWhatTheMountUses() throws {
        let runtime = try runtime()
        let provider = try runtime.provider(for: try runtime.catalogs.resolve(NodeFixture.selection))
        _ = try provider.indexUsedImages()
        provider.persistPrefetched()  // a mount commits a layer unpacked whole in the background: let it land
        let status = runtime.status(nil)
        #expect(status.cacheDir == node.layout.root && status.cacheMaxSize == 1 << 30)
        #expect(!status.offline && status.mirror == nil && status.mirrorFallbacks == 0 && !status.systemdNotify)
        #expect(status.metricsListen == nil)
        let sample = runtime.metricsSample
        #expect(sample.imagesUsed == 1 && sample.imagesSkipped == 0)
        #expect(sample.fetch.blobsFetched == 1 && sample.fetch.bytesFetched == node.layer.size)
        #expect(sample.cacheSize == status.cacheSize && sample.cacheMaxSize == 1 << 30)
    }

    @Test func theMetricsListenerIsBoundBeforeTheMountServes() throws {
        let runtime = try runtime(metrics: true)
        let address = try #require(runtime.status(nil).metricsListen)
        #expect(address.hasPrefix("127.0.0.1:") && !address.hasSuffix(":0"))
        // Bound at once: a second listener on the same port fails, so a taken port fails the mount early.
        #expect(throws: MetricsEndpointError.self) {
            try MetricsServer(address: try MetricsServer.Address(parsing: address), exposition: Exposition()) { [] }
        }
        runtime.finished()
    }
}
