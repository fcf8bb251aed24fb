import Foundation
import MetricsEndpoint
import Testing

@testable import NodeService

/// A mount's publishing and refresh counters, as metrics and in the status document.
@Suite struct FleetMetricsTests {
    @Test func aMountWithoutSignaturePolicyIsAGaugeOfOne() {
        func value(_ sample: NodeMetrics.Sample) -> [Double]? {
            NodeMetrics.families(sample).first { $0.name == "mcvfs_signature_policy_missing" }?.samples.map(\.value)
        }
        var sample = NodeMetrics.Sample()
        #expect(value(sample) == [0])
        sample.signaturePolicyMissing = true
        #expect(value(sample) == [1])
        #expect(
            NodeMetrics.families(sample).first { $0.name == "mcvfs_signature_policy_missing" }?.kind == .gauge)
    }

    @Test func refreshAndActivityCountersAreMetricsOnlyWhenTheMountHasThem() {
        #expect(!NodeMetrics.families(NodeMetrics.Sample()).contains { $0.name.contains("refresh") })
        var sample = NodeMetrics.Sample()
        var refresh = MountStatus.Refresh(intervalSeconds: 30)
        (refresh.refreshes, refresh.failures, refresh.imagesAdded) = (9, 1, 4)
        // A mount activity's families (automatic publishing's, in Publishing) join the scrape as they are.
        sample.activities = [.single("mcvfs_activity_runs_total", help: "Runs.", kind: .counter, value: 5)]
        sample.refresh = refresh
        let byName = Dictionary(uniqueKeysWithValues: NodeMetrics.families(sample).map { ($0.name, $0) })
        let expected: [String: Double] = [
            "mcvfs_activity_runs_total": 5, "mcvfs_refreshes_total": 9, "mcvfs_refresh_failures_total": 1,
            "mcvfs_refresh_added_images_total": 4,
        ]
        for (name, value) in expected {
            #expect(byName[name]?.kind == .counter, "\(name)")
            #expect(byName[name]?.samples.map(\.value) == [value], "\(name)")
        }
    }

    @Test func aStatusDocumentWithoutTheFleetPartsStillDecodes() throws {
        // An older daemon's document has neither part; a newer `mcvfs status` must read it.
        let service =
            #"{"offline":false,"mirrorFallbacks":0,"cacheDir":"/c","evictedBlobs":0,"evictedBytes":0,"#
            + #""fuseErrors":{},"systemdNotify":false}"#
        let decoded = try JSONDecoder().decode(MountStatus.Service.self, from: Data(service.utf8))
        #expect(decoded.publishing == nil && decoded.refresh == nil)
    }
}
