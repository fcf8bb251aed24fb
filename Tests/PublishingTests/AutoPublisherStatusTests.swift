import Foundation
import MetricsEndpoint
import NodeService
import OCI
import Testing

@testable import Publishing

/// Automatic publishing's status: its metrics, its section of status.json, and what each user may read of it.
@Suite struct AutoPublisherStatusTests {
    func status() -> AutoPublisher.Status {
        var status = AutoPublisher.Status(
            repository: "r/x", intervalSeconds: 0.5, uppers: ["/c/upper/m/0", "/c/upper/m/1000", "/c/upper/m/1001"],
            signingKey: "sha256:ab")
        (status.runs, status.failures, status.imagesPushed, status.kernelsPublished) = (5, 2, 3, 7)
        status.lastError = "HTTP 503 pushing /c/upper/m/1001/SECRETKEY"
        status.lastSkipped = ["/c/upper/m/1000/KEYA: a link", "/c/upper/m/1001/KEYB: too large"]
        return status
    }

    /// Dashboards and alerts name these: a rename or a type change must be deliberate.
    @Test func itsCountersAreTheMcvfsPublishMetrics() {
        let byName = Dictionary(uniqueKeysWithValues: status().metricFamilies.map { ($0.name, $0) })
        let expected: [String: Double] = [
            "mcvfs_publish_runs_total": 5, "mcvfs_publish_failures_total": 2, "mcvfs_published_images_total": 3,
            "mcvfs_published_kernels_total": 7,
        ]
        #expect(Set(byName.keys) == Set(expected.keys))
        for (name, value) in expected {
            #expect(byName[name]?.kind == .counter, "\(name)")
            #expect(byName[name]?.samples.map(\.value) == [value], "\(name)")
        }
    }

    /// The node carries the section as JSON it does not know; `mcvfs status` reads it back whole, with the field
    /// names and number forms documents had when the type lived in the node service.
    @Test func theSectionRoundTripsThroughTheStatusDocument() throws {
        let service =
            #"{"offline":false,"mirrorFallbacks":0,"cacheDir":"/c","evictedBlobs":0,"evictedBytes":0,"#
            + #""fuseErrors":{},"systemdNotify":false}"#
        var decoded = try JSONDecoder().decode(MountStatus.Service.self, from: Data(service.utf8))
        decoded.publishing = try JSONValue(encoding: status())
        let text = String(decoding: try JSONEncoder().encode(decoded), as: UTF8.self)
        #expect(text.contains(#""intervalSeconds":0.5"#) && text.contains(#""runs":5"#))
        let reread = try JSONDecoder().decode(MountStatus.Service.self, from: Data(text.utf8))
        #expect(try reread.publishing?.decode(AutoPublisher.Status.self) == status())
    }

    /// A pod user reads their own upper and what was left out of it; other users' KEY names (what they compile)
    /// and an error that may name them are for root and the mount's owner.
    @Test func aUserSeesOnlyTheirOwnUpper() {
        let seen = status().seen(by: 1000)
        #expect(seen.uppers == ["/c/upper/m/1000"])
        #expect(seen.lastSkipped == ["/c/upper/m/1000/KEYA: a link"])
        #expect(seen.lastError?.contains("SECRETKEY") == false)
        #expect(seen.runs == 5 && seen.failures == 2)
        var shared = status()
        shared.uppers = ["/c/upper/m/shared"]
        shared.lastSkipped = ["/c/upper/m/shared/KEYC: a link"]
        #expect(shared.seen(by: 1000).lastSkipped == shared.lastSkipped)
    }
}
