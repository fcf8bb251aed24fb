import BlobCache
import ContentHash
import Foundation
import OCI
import Testing

@testable import NodeService

/// When a node first used each image: what ranks a tag pushed while it was away after the images it served.
@Suite struct FirstSeenTests {
    func digest(_ name: String) -> Digest { SHA256Hasher.digest(Data(name.utf8)) }

    @Test func theFirstMountTakesBatchZeroAndEachLaterOneWithNewImagesTheNext() {
        var record = FirstSeen.Record(batches: [])
        let first = FirstSeen.assign([digest("cuda-sm90"), digest("fleet")], to: &record, pruning: true)
        #expect(first.batches == [digest("cuda-sm90"): 0, digest("fleet"): 0])
        #expect(first.changed)
        let same = FirstSeen.assign([digest("fleet"), digest("cuda-sm90")], to: &record, pruning: true)
        #expect(same.batches == first.batches)
        #expect(!same.changed, "nothing new: nothing written")
        // "0" was pushed while the node was away: it ranks after what the node served, though it sorts first.
        let remount = FirstSeen.assign([digest("0"), digest("cuda-sm90"), digest("fleet")], to: &record, pruning: true)
        #expect(remount.batches == [digest("0"): 1, digest("cuda-sm90"): 0, digest("fleet"): 0])
        // A refresh adds a batch; it never forgets what the mount has.
        let refresh = FirstSeen.assign([digest("new")], to: &record, pruning: false)
        #expect(refresh.batches == [digest("new"): 2])
        #expect(record.batches.count == 3)
    }

    @Test func pruningForgetsGoneImagesButMovesNoImageUp() {
        var record = FirstSeen.Record(batches: [[digest("a")], [digest("b")], [digest("c")]])
        let update = FirstSeen.assign([digest("c")], to: &record, pruning: true)
        #expect(update.batches == [digest("c"): 2])
        #expect(record.batches == [[], [], [digest("c")]])
        // A tag that comes back is new again: it only ranks lower.
        #expect(FirstSeen.assign([digest("a"), digest("c")], to: &record, pruning: true).batches[digest("a")] == 3)
    }

    @Test func theRecordLivesBesideTheCatalogAndSurvivesARemount() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("first-seen-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let records = CatalogRecords(layout: try CacheLayout(root: directory))
        let seen = FirstSeen(records: records, reference: "r/c", selection: "cuda:90")
        let image = { (name: String) in CacheImage(name: name, digest: digest(name), layers: [], labels: [:]) }
        _ = seen.batches(of: [image("cuda-sm90")], pruning: true)
        let again = FirstSeen(records: records, reference: "r/c", selection: "cuda:90")
        #expect(again.batches(of: [image("0"), image("cuda-sm90")], pruning: true)[digest("0")] == 1)
        #expect(FileManager.default.fileExists(atPath: seen.file))
    }
}
