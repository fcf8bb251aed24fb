import Foundation
import OCI
import Publishing
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

    @Test func publishingAndRefreshCountersAreMetricsOnlyWhenTheMountDoesThem() {
        #expect(!NodeMetrics.families(NodeMetrics.Sample()).contains { $0.name.contains("publish") })
        #expect(!NodeMetrics.families(NodeMetrics.Sample()).contains { $0.name.contains("refresh") })
        var sample = NodeMetrics.Sample()
        var publishing = AutoPublisher.Status(
            repository: "r/x", intervalSeconds: 60, uppers: ["/u/0"], signingKey: nil)
        (publishing.runs, publishing.failures, publishing.imagesPushed, publishing.kernelsPublished) = (5, 2, 3, 7)
        var refresh = MountStatus.Refresh(intervalSeconds: 30)
        (refresh.refreshes, refresh.failures, refresh.imagesAdded) = (9, 1, 4)
        sample.activities = publishing.metricFamilies
        sample.refresh = refresh
        let byName = Dictionary(uniqueKeysWithValues: NodeMetrics.families(sample).map { ($0.name, $0) })
        let expected: [String: Double] = [
            "mcvfs_publish_runs_total": 5, "mcvfs_publish_failures_total": 2, "mcvfs_published_images_total": 3,
            "mcvfs_published_kernels_total": 7, "mcvfs_refreshes_total": 9, "mcvfs_refresh_failures_total": 1,
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

    /// Publishing owns its status type; the node carries it as a section and `mcvfs status` reads it back whole.
    @Test func thePublishingSectionRoundTripsThroughTheStatusDocument() throws {
        var publishing = AutoPublisher.Status(
            repository: "r/x", intervalSeconds: 0.5, uppers: ["/u/0"], signingKey: "sha256:ab")
        (publishing.runs, publishing.lastError, publishing.lastSkipped) = (3, "HTTP 503", ["a/b: a link"])
        let service =
            #"{"offline":false,"mirrorFallbacks":0,"cacheDir":"/c","evictedBlobs":0,"evictedBytes":0,"#
            + #""fuseErrors":{},"systemdNotify":false}"#
        var decoded = try JSONDecoder().decode(MountStatus.Service.self, from: Data(service.utf8))
        decoded.publishing = try JSONValue(encoding: publishing)
        let text = String(decoding: try MountStatus.encoder.encode(decoded), as: UTF8.self)
        #expect(text.contains(#""intervalSeconds" : 0.5"#) && text.contains(#""runs" : 3"#))
        let reread = try JSONDecoder().decode(MountStatus.Service.self, from: Data(text.utf8))
        #expect(try reread.publishing?.decode(AutoPublisher.Status.self) == publishing)
    }
}
