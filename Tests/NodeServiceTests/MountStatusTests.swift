import Foundation
import Testing

@testable import NodeService

/// The one status document: what daemons of this and earlier releases write is what `status` and `export` read.
@Suite struct MountStatusTests {
    /// A document as the daemon of the first release with a node service wrote it (mcvfs 0.1, de669d6).
    static let firstRelease = #"""
        {
          "consumerRoot" : "/mnt/triton",
          "fetch" : {
            "blobsFetched" : 1, "bytesFetched" : 4096, "fetchErrors" : 0,
            "fetchSeconds" : { "counts" : [0,1,0,0,0,0,0,0,0,0,0,0,0], "sum" : 0.07 },
            "lastErrors" : [ ], "layerCacheHits" : 0, "layerCacheMisses" : 1, "rangeRequests" : 0,
            "verificationFailures" : 0
          },
          "gpus" : "cuda:90:32",
          "isolation" : "perUser",
          "loaded" : true,
          "mountpoint" : "/mnt/triton",
          "pid" : 4242,
          "reference" : "localhost:5000/org/cache",
          "service" : {
            "cacheDir" : "/var/lib/mcvfs", "cacheSize" : 8192, "evictedBlobs" : 0, "evictedBytes" : 0,
            "fuseErrors" : { "lookup/ENOENT" : 3 }, "lease" : "/var/lib/mcvfs/leases/4242.json",
            "mirrorFallbacks" : 0, "offline" : false, "systemdNotify" : false
          },
          "skipped" : [ { "name" : "cuda-sm80", "reason" : "targets cuda:80:32 do not match", "targets" : ["cuda:80:32"] } ],
          "tree" : { "groupFilesRelocated" : 2, "kernelsHidden" : 0, "kernelsShown" : 2 },
          "upperRoot" : "/var/lib/mcvfs/upper/localhost_5000_org_cache-0123456789ab",
          "uppers" : [ { "bytes" : 10, "files" : 1, "name" : "0" } ],
          "used" : [ { "digest" : "sha256:\#(String(repeating: "a", count: 64))", "layers" : [], "name" : "cuda-sm90",
                       "targets" : ["cuda:90:32"] } ]
        }
        """#

    @Test func documentsOfTheFirstReleaseStillRead() throws {
        let status = try MountStatus.decode(Data(Self.firstRelease.utf8))
        #expect(status.used.map(\.name) == ["cuda-sm90"])
        #expect(status.skipped.first?.reason == "targets cuda:80:32 do not match")
        #expect(status.fetch.bytesFetched == 4096 && status.fetch.layerCacheMisses == 1)
        #expect(status.tree?.kernelsShown == 2)
        #expect(status.service?.fuseErrors == ["lookup/ENOENT": 3])
        #expect(status.service?.metricsListen == nil && status.service?.mirror == nil)
        #expect(status.upper(of: 1000) == "/var/lib/mcvfs/upper/localhost_5000_org_cache-0123456789ab/1000")
    }

    @Test func whatIsWrittenReadsBackTheSame() throws {
        var status = try MountStatus.decode(Data(Self.firstRelease.utf8))
        status.used[0].signedBy = ["cosign.pub"]
        let encoded = try status.encoded()
        #expect(encoded.last == UInt8(ascii: "\n"))
        #expect(try MountStatus.decode(encoded) == status)
        // The JSON field names are the contract probes and dashboards read.
        let object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "consumerRoot", "fetch", "gpus", "isolation", "loaded", "mountpoint", "pid", "reference", "service",
                "skipped", "tree", "upperRoot", "uppers", "used",
            ])
    }

    @Test func theUpperOfACallerFollowsTheIsolation() throws {
        var status = try MountStatus.decode(Data(Self.firstRelease.utf8))
        status.isolation = "shared"
        #expect(status.upper(of: 1000)?.hasSuffix("/shared") == true)
        status.isolation = nil  // documents that never said: one upper per uid
        #expect(status.upper(of: 7)?.hasSuffix("/7") == true)
        status.upperRoot = nil
        #expect(status.upper(of: 7) == nil)
    }

    @Test func aUserSeesOnlyTheirOwnUpper() throws {
        var status = try MountStatus.decode(Data(Self.firstRelease.utf8))
        status.uppers = ["0", "1000", "1001"].map { MountStatus.Upper(name: $0, bytes: 1, files: 1) }
        #expect(status.seen(by: 1000).uppers.map(\.name) == ["1000"])
        #expect(status.seen(by: 4242).uppers.isEmpty)
        status.isolation = "shared"
        status.uppers = [MountStatus.Upper(name: "shared", bytes: 1, files: 1)]
        #expect(status.seen(by: 1000).uppers.map(\.name) == ["shared"])
    }

    @Test func aDocumentWithoutItsOptionalPartsReads() throws {
        var object = try #require(
            try JSONSerialization.jsonObject(with: Data(Self.firstRelease.utf8)) as? [String: Any])
        for key in ["service", "tree", "upperRoot", "isolation"] { object.removeValue(forKey: key) }
        object["addedByALaterRelease"] = ["anything": 1]
        let status = try MountStatus.decode(try JSONSerialization.data(withJSONObject: object))
        #expect(status.service == nil && status.tree == nil && status.upper(of: 0) == nil)
    }

    @Test func uppersCountUserFilesAndLeaveWhiteoutsOut() throws {
        let root = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("uppers-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let upper = root.appendingPathComponent("1000/KEY")
        try FileManager.default.createDirectory(at: upper, withIntermediateDirectories: true)
        try Data(count: 100).write(to: upper.appendingPathComponent("add.cubin"))
        try Data().write(to: upper.appendingPathComponent(".wh.old.cubin"))
        try FileManager.default.createDirectory(
            at: root.appendingPathComponent("shared"), withIntermediateDirectories: true)
        let measurement = UpperSizes.measure(root.path)
        #expect(
            measurement.uppers == [
                MountStatus.Upper(name: "1000", bytes: 100, files: 1),
                MountStatus.Upper(name: "shared", bytes: 0, files: 0),
            ])
        #expect(!measurement.partial)
    }

    @Test func aMeasurementStopsAtItsBoundOnEntriesAndSaysSo() throws {
        let root = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("uppers-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let upper = root.appendingPathComponent("1000")
        try FileManager.default.createDirectory(at: upper, withIntermediateDirectories: true)
        for i in 0..<10 { try Data(count: 1).write(to: upper.appendingPathComponent("f\(i)")) }
        let measurement = UpperSizes.measure(root.path, entries: 4)
        #expect(measurement.partial && measurement.uppers.first?.files ?? 99 <= 4)
    }

    @Test func beforeTheMountIsWiredTheDocumentIsEmpty() {
        #expect(MountStatusBoard().render() == Data("{}\n".utf8))
    }
}
