import Foundation
import OCI
import Testing

@testable import NodeService

/// Digests named by a letter, so plans read like the cases.
func d(_ name: String) -> Digest { try! Digest(hex: String(repeating: name, count: 64 / name.count)) }

func blob(_ name: String, _ size: Int64, at time: Double) -> EvictionPolicy.Blob {
    EvictionPolicy.Blob(digest: d(name), size: size, lastAccess: Date(timeIntervalSince1970: time))
}

@Suite struct EvictionPolicyTests {
    /// Two layers, each with its files; layer "a" (files 1, 2) used at t=100, layer "b" (files 3, 2) at t=200.
    /// File 2 is shared. Config "c" is a lone blob used at t=50.
    let blobs = [
        blob("a", 100, at: 100), blob("1", 10, at: 90), blob("2", 20, at: 100),
        blob("b", 100, at: 200), blob("3", 30, at: 200),
        blob("c", 1, at: 50),
    ]
    let indexes: [Digest: Set<Digest>] = [d("a"): [d("1"), d("2")], d("b"): [d("3"), d("2")]]

    func plan(live: Set<Digest> = [], max: Int64) -> EvictionPolicy.Plan {
        EvictionPolicy.plan(.init(blobs: blobs, indexes: indexes, live: live, maxSize: max))
    }

    @Test func underTheBoundNothingGoes() {
        let result = plan(max: 261)
        #expect(result == EvictionPolicy.Plan(sizeBefore: 261, sizeAfter: 261))
    }

    @Test func leastRecentlyUsedUnitGoesFirstAndSharedFilesStay() {
        // The config (t=50) goes first but is not enough; then layer a's unit: its blob and file 1, not file 2,
        // which layer b still names.
        let result = plan(max: 200)
        #expect(result.removeIndexes == [d("a")])
        #expect(result.removeBlobs == [d("1"), d("a"), d("c")].sorted())
        #expect(result.sizeAfter == 150)
        #expect(!result.overBound)
    }

    @Test func sharedFileGoesWithItsLastUser() {
        let result = plan(max: 0)
        #expect(result.removeIndexes == [d("a"), d("b")])
        #expect(Set(result.removeBlobs) == Set(blobs.map(\.digest)))
        #expect(result.sizeAfter == 0)
    }

    @Test func liveLayerUnitIsNeverTouched() {
        // Layer a is leased: its blob and all its files stay, even though it is the least recently used unit.
        let result = plan(live: [d("a")], max: 0)
        #expect(result.removeIndexes == [d("b")])
        #expect(result.removeBlobs == [d("3"), d("b"), d("c")].sorted())
        #expect(result.sizeAfter == 130)
        #expect(result.overBound)
    }

    @Test func leasedFileIsKeptEvenWhenItsLayerGoes() {
        let result = plan(live: [d("1")], max: 0)
        #expect(!result.removeBlobs.contains(d("1")))
        #expect(result.removeIndexes == [d("a"), d("b")])
    }

    @Test func recencyOfAnyMemberCountsForTheUnit() {
        // File 1 read at t=300 makes layer a's unit the most recent one: b's unit goes first.
        var touched = blobs
        touched[1] = blob("1", 10, at: 300)
        let result = EvictionPolicy.plan(.init(blobs: touched, indexes: indexes, live: [], maxSize: 200))
        #expect(result.removeIndexes == [d("b")])
        #expect(result.removeBlobs == [d("3"), d("b"), d("c")].sorted())
    }

    @Test func indexWithoutBlobsIsDroppedWhenOverBound() {
        // An index whose layer and files are all gone is a unit of size 0 and the oldest; it goes first.
        let result = EvictionPolicy.plan(
            .init(blobs: [blob("c", 10, at: 1)], indexes: [d("e"): [d("f")]], live: [], maxSize: 5))
        #expect(result.removeIndexes == [d("e")])
        #expect(result.removeBlobs == [d("c")])
    }
}
