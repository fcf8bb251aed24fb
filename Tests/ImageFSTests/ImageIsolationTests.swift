import ContentHash
import Foundation
import LayerArchive
import OCI
import Synchronization
import Testing
import TimeBudget

@testable import ImageFS

/// One image that fails or stalls affects only the names that it alone could provide (issue 13).
@Suite struct ImageIsolationTests {
    struct TwoImages {
        let fs: ImageFileSystem
        let provider: FixtureProvider
        let a: LayerIndex
        let b: LayerIndex
    }

    /// Images "a" (KEYA, and SHARED with a file of its own) and "b" (KEYB, and SHARED), b ranked first.
    func twoImages(_ f: Fixture, budget: Duration = .seconds(10)) throws -> TwoImages {
        let a = f.layer(
            try f.kernel("KEYA", name: "add", target: "cuda:90:32") + [
                f.directory("io.triton.cache/SHARED"), try f.file("io.triton.cache/SHARED/x", "a's x"),
            ])
        let b = f.layer(
            try f.kernel("KEYB", name: "mul", target: "cuda:90:32") + [
                f.directory("io.triton.cache/SHARED"), try f.file("io.triton.cache/SHARED/x", "b's x"),
                try f.file("io.triton.cache/SHARED/y", "b's y"),
            ])
        let (fs, provider) = f.mount([f.image("b", [b]), f.image("a", [a])], layers: [a, b], budget: budget)
        return TwoImages(fs: fs, provider: provider, a: a, b: b)
    }

    /// The same, with b's load held until the test releases it (a registry that takes its time).
    func twoImagesWaitingForB(_ f: Fixture, budget: Duration = .seconds(10)) throws -> TwoImages {
        let t = try twoImages(f, budget: budget)
        t.provider.hold(t.b)
        return t
    }

    func status(_ fs: ImageFileSystem, _ name: String) -> ImageSet.Status? {
        fs.imageStatus.first { $0.name == name }
    }

    /// Polls `condition` (background loads settle on their own time), up to a generous guard.
    func eventually(_ condition: () -> Bool) -> Bool {
        let end = ContinuousClock.now + .seconds(10)
        while !condition() {
            if ContinuousClock.now > end { return false }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return true
    }

    @Test func aFailingImageLeavesTheOthersServing() throws {
        let f = try Fixture()
        let t = try twoImages(f)
        t.provider.failingLayers.withLock { $0 = [t.b.layer] }
        #expect(try t.fs.contents("KEYA/add.bin") == "binary of add for cuda:90:32")
        // The shared name is served from the image that works.
        #expect(try t.fs.contents("SHARED/x") == "a's x")
        #expect(throws: FSError.notFound) { try t.fs.path("SHARED/y") }
        // A name only the failing image may hold is absent for now (Triton compiles it rather than crash), and
        // counted; the image's error is in its status.
        #expect(throws: FSError.notFound) { try t.fs.path("KEYB") }
        #expect(t.fs.report?.lookupsAbsentDuringFaults == 1)
        // The root lists what is available.
        #expect(try t.fs.names("") == ["KEYA", "SHARED"])
        let b = try #require(status(t.fs, "b"))
        #expect(b.phase == .failed)
        #expect(b.failures == 1)
        #expect(b.lastError?.contains(t.b.layer.short) == true)
        #expect(b.nextRetry.map { $0 > Date() && $0 < Date().addingTimeInterval(5) } == true)
        #expect(status(t.fs, "a")?.phase == .loaded)
        #expect(t.fs.isLoaded == false)
    }

    @Test func aFailedImageIsRetriedInTheBackgroundAndOnlyAddsWhatIsMissing() throws {
        let f = try Fixture()
        let t = try twoImages(f)
        t.provider.failingLayers.withLock { $0 = [t.b.layer] }
        #expect(try t.fs.contents("SHARED/x") == "a's x")
        let fetches = t.provider.requests.withLock { $0.filter { $0 == t.b.layer }.count }
        #expect(throws: FSError.self) { try t.fs.path("KEYB") }
        #expect(t.provider.requests.withLock { $0.filter { $0 == t.b.layer }.count } == fetches, "retried too soon")

        t.provider.failingLayers.withLock { $0 = [] }
        Thread.sleep(forTimeInterval: 0.3)  // past the 200 ms retry delay
        // Any access starts the retry; nobody has to ask for one of b's names.
        #expect(try t.fs.contents("KEYA/add.bin") == "binary of add for cuda:90:32")
        #expect(eventually { status(t.fs, "b")?.phase == .loaded })
        #expect(try t.fs.contents("KEYB/mul.bin") == "binary of mul for cuda:90:32")
        // SHARED was served from a: it stays a's whole, and b's other bytes for it are reported.
        #expect(try t.fs.contents("SHARED/x") == "a's x")
        #expect(throws: FSError.notFound) { try t.fs.path("SHARED/y") }
        #expect(t.fs.report?.keyConflicts == 1)
        #expect(t.fs.report?.conflicts == [.init(key: "SHARED", served: "a", other: "b")])
        #expect(t.fs.isLoaded)
        #expect(status(t.fs, "b")?.lastError != nil, "the failure stays on record")
    }

    @Test func aNameNoImageHasIsMissingOnlyOnceEveryImageIsLoaded() throws {
        let f = try Fixture()
        let t = try twoImages(f)
        t.provider.failingLayers.withLock { $0 = [t.b.layer] }
        #expect(throws: FSError.self) { try t.fs.path("NOWHERE") }
        t.provider.failingLayers.withLock { $0 = [] }
        Thread.sleep(forTimeInterval: 0.3)
        #expect(throws: FSError.notFound) { try t.fs.path("NOWHERE") }
    }

    @Test func aSlowImageHoldsTheFirstLookupBackByOneBudgetAtMostThenNothing() throws {
        let f = try Fixture()
        let t = try twoImagesWaitingForB(f, budget: .milliseconds(300))
        defer { t.provider.release(t.b) }
        let start = ContinuousClock.now
        // The first lookup waits for b's first load (it might hold KEYA too) until its budget runs out...
        #expect(try t.fs.contents("KEYA/add.bin") == "binary of add for cuda:90:32")
        // ... and from then on b holds nothing back: SHARED resolves from a alone, although b ranks first.
        #expect(try t.fs.contents("SHARED/x") == "a's x")
        #expect(ContinuousClock.now - start < .seconds(5), "a waited for b more than once")
        #expect(status(t.fs, "b")?.phase == .loading)
        // What b holds joins when it arrives, changing nothing that was served: SHARED stays a's, whole.
        t.provider.release(t.b)
        #expect(eventually { status(t.fs, "b")?.phase == .loaded })
        #expect(try t.fs.contents("KEYB/mul.bin") == "binary of mul for cuda:90:32")
        #expect(throws: FSError.notFound) { try t.fs.path("SHARED/y") }
        #expect(try t.fs.contents("SHARED/x") == "a's x")
    }

    @Test func aKeyOfTheImageWithPrecedenceWaitsForNoOtherImage() throws {
        let f = try Fixture()
        let a = f.layer(try f.kernel("KEYA", name: "add", target: "cuda:90:32"))
        let b = f.layer(try f.kernel("KEYB", name: "mul", target: "cuda:90:32"))
        // A budget no test run reaches: had the lookup waited for b, it would have taken the whole of it.
        let (fs, provider) = f.mount([f.image("a", [a]), f.image("b", [b])], layers: [a, b], budget: .seconds(120))
        provider.hold(b)
        defer { provider.release(b) }
        let start = ContinuousClock.now
        #expect(try fs.contents("KEYA/add.bin") == "binary of add for cuda:90:32")
        #expect(ContinuousClock.now - start < .seconds(60))
        #expect(status(fs, "b")?.phase == .loading)
        provider.release(b)
        #expect(try fs.contents("KEYB/mul.bin") == "binary of mul for cuda:90:32")
    }

    @Test func aHealthyMountMergesInTagOrderWhicheverImageLoadsFirst() throws {
        let f = try Fixture()
        let t = try twoImagesWaitingForB(f)
        // b ranks first and is the slower of the two: its files win anyway.
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(200)) { t.provider.release(t.b) }
        #expect(try t.fs.contents("SHARED/x") == "b's x")
        #expect(try t.fs.names("SHARED") == ["x", "y"])
    }

    @Test func nodeImagesOfOneBatchThatDisagreeOnAKeyWithholdItWhicheverLoadsFirst() throws {
        let f = try Fixture()
        func layer(_ own: String, _ bytes: String) throws -> LayerIndex {
            f.layer([
                f.directory("io.triton.cache/K"), try f.file("io.triton.cache/K/a", bytes),
                f.directory("io.triton.cache/S"), try f.file("io.triton.cache/S/s", "same"),
                f.directory("io.triton.cache/\(own)"), try f.file("io.triton.cache/\(own)/o", own),
            ])
        }
        let (x, y) = (try layer("X", "x's a"), try layer("Y", "y's a"))
        let images = [
            f.image("fleet-cuda-sm90-aaaaaaaaaaaaaaaa", [x]), f.image("fleet-cuda-sm90-bbbbbbbbbbbbbbbb", [y]),
        ]
        let (fs, provider) = f.mount(images, layers: [x, y], budget: .seconds(120))
        // The image whose digest sorts last loads last: the KEY waits for it rather than serve the first one's copy.
        let last = images[0].digest.hex < images[1].digest.hex ? y : x
        provider.hold(last)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(200)) { provider.release(last) }
        #expect(throws: FSError.notFound) { try fs.path("K") }
        #expect(try fs.contents("S/s") == "same", "a KEY both hold alike is served")
        #expect(try fs.contents("X/o") == "X" && fs.contents("Y/o") == "Y")
        #expect(fs.report?.keyConflicts == 1)
        #expect(throws: FSError.notFound) { try fs.path("K/a") }
    }

    @Test func aLookupWaitingForAnImageEndsAtItsDeadline() throws {
        let f = try Fixture()
        let t = try twoImagesWaitingForB(f)
        defer { t.provider.release(t.b) }
        let start = ContinuousClock.now
        #expect(throws: FSError.notFound) {
            try Deadline.bind(.after(.milliseconds(300))) { try t.fs.path("KEYB") }
        }
        #expect(t.fs.report?.lookupsAbsentDuringFaults == 1)
        #expect(ContinuousClock.now - start < .seconds(5))
        // The load goes on: once it ends, the name serves.
        t.provider.release(t.b)
        #expect(eventually { status(t.fs, "b")?.phase == .loaded })
        #expect(try t.fs.contents("KEYB/mul.bin") == "binary of mul for cuda:90:32")
    }

    @Test func anImageWithoutADeadlineWaitsForTheMountsBudget() throws {
        let f = try Fixture()
        let t = try twoImagesWaitingForB(f, budget: .milliseconds(300))
        defer { t.provider.release(t.b) }
        let start = ContinuousClock.now
        #expect(throws: FSError.self) { try t.fs.path("KEYB") }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func imagesAddedWhileServingOnlyAddNames() throws {
        let f = try Fixture()
        let first = f.layer([f.directory("io.triton.cache/K"), try f.file("io.triton.cache/K/a", "first a")])
        let late = f.layer([
            f.directory("io.triton.cache/K"), try f.file("io.triton.cache/K/a", "late a"),
            f.directory("io.triton.cache/NEW"), try f.file("io.triton.cache/NEW/n", "new"),
        ])
        let provider = FixtureProvider(store: f.store, layers: [first, late])
        let fs = ImageFileSystem(
            images: [f.image("1", [first])], provider: provider,
            options: .init(
                tree: .init(consumerRoot: "/mnt", filter: .all, worldReadable: true), owner: (1000, 1000),
                retryDelay: .milliseconds(200)),
            status: { _ in Data() })
        #expect(try fs.contents("K/a") == "first a")
        #expect(throws: FSError.notFound) { try fs.path("NEW") }
        fs.add(images: [f.image("2", [late])])
        #expect(try fs.contents("NEW/n") == "new")
        #expect(try fs.contents("K/a") == "first a", "a served file never changes")
        #expect(fs.images.map(\.name) == ["1", "2"])
    }
}

/// The per-image state machine, without threads.
@Suite struct ImageSetStateTests {
    func image(_ name: String) -> CacheImage {
        CacheImage(name: name, digest: SHA256Hasher.digest(Data(name.utf8)), layers: [], labels: [:])
    }

    func entry(_ name: String, _ position: Int) -> ImageSet.State.Entry {
        .init(image: image(name), precedence: Precedence(of: image(name), position: position, batch: 0))
    }

    @Test func onlyFirstLoadsHoldLookupsAndOnlyUntilAWaitForThemRunsOut() {
        var state = ImageSet.State(entries: [entry("a", 0), entry("b", 1)])
        _ = state.takeDue(now: .now)
        #expect(state.isHoldingLookups(upTo: .last))
        _ = state.settle(0, failure: "boom", now: .now, retryDelay: .zero)
        #expect(state.isHoldingLookups(upTo: .last), "b is still in its first load")
        state.stopHoldingLookups()
        #expect(!state.isHoldingLookups(upTo: .last))
        #expect(state.isLoading, "b goes on loading")
        _ = state.takeDue(now: .now)  // a's retry
        #expect(!state.isHoldingLookups(upTo: .last), "a retry holds nothing back")
    }

    @Test func onlyImagesRankedBeforeTheFirstProviderHoldALookup() {
        // The image that has the name is in the tree: its load settled.
        var aHasIt = ImageSet.State(entries: [entry("a", 0), entry("b", 1)])
        _ = aHasIt.takeDue(now: .now)
        _ = aHasIt.settle(0, failure: nil, now: .now, retryDelay: .zero)
        #expect(
            !aHasIt.isHoldingLookups(upTo: aHasIt.entries[0].precedence.rank), "a has the name: b is not waited for")
        var bHasIt = ImageSet.State(entries: [entry("a", 0), entry("b", 1)])
        _ = bHasIt.takeDue(now: .now)
        _ = bHasIt.settle(1, failure: nil, now: .now, retryDelay: .zero)
        #expect(bHasIt.isHoldingLookups(upTo: bHasIt.entries[1].precedence.rank), "only b has it: a may have it too")
    }

    @Test func aNodeImageWaitsForItsPeersWhicheverDigestSortsFirst() {
        // Two node-published images of one batch: whichever has the name, the other might hold other bytes for it.
        let node = { (name: String) in
            ImageSet.State.Entry(
                image: self.image(name), precedence: Precedence(of: self.image(name), position: 0, batch: 0))
        }
        var state = ImageSet.State(entries: [
            entry("base", 0), node("fleet-aaaaaaaaaaaaaaaa"), node("fleet-bbbbbbbbbbbbbbbb"),
        ])
        _ = state.takeDue(now: .now)
        _ = state.settle(1, failure: nil, now: .now, retryDelay: .zero)
        #expect(state.isHoldingLookups(upTo: state.entries[1].precedence.rank), "its peer and the base image")
        _ = state.settle(0, failure: nil, now: .now, retryDelay: .zero)
        #expect(state.isHoldingLookups(upTo: state.entries[1].precedence.rank), "its peer still loads")
        #expect(!state.isHoldingLookups(upTo: state.entries[0].precedence.rank), "a base image's KEY waits for none")
        _ = state.settle(2, failure: nil, now: .now, retryDelay: .zero)
        #expect(!state.isHoldingLookups(upTo: state.entries[1].precedence.rank))
    }

    @Test func loadsStartOnceAndFailuresWaitForTheirRetryTime() {
        var state = ImageSet.State(entries: [entry("a", 0), entry("b", 1)])
        let now = ContinuousClock.now
        #expect(state.takeDue(now: now).map(\.rank) == [0, 1])
        #expect(state.takeDue(now: now).isEmpty, "a load in flight is not started twice")
        #expect(state.isLoading)

        _ = state.settle(0, failure: nil, now: now, retryDelay: .seconds(5))
        _ = state.settle(1, failure: "boom", now: now, retryDelay: .seconds(5))
        #expect(state.generation == 2)
        #expect(!state.isLoading)
        #expect(state.takeDue(now: now + .seconds(4)).isEmpty)
        #expect(
            state.unavailable(now: now + .seconds(4)) == [
                "image b unavailable: boom (failed 1 time(s); next retry in 1.0 s)"
            ])
        #expect(state.takeDue(now: now + .seconds(5)).map(\.rank) == [1])
        #expect(state.unavailable(now: now + .seconds(5)) == ["image b still loading"])
        _ = state.settle(1, failure: nil, now: now + .seconds(6), retryDelay: .seconds(5))
        #expect(state.allLoaded)
        #expect(state.entries[1].failures == 1)
        #expect(state.entries[1].lastError == "boom")
    }

    @Test func settlingWakesEveryWaiterOnce() {
        var state = ImageSet.State(entries: [entry("a", 0)])
        _ = state.takeDue(now: .now)
        state.waiters = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        #expect(state.settle(0, failure: nil, now: .now, retryDelay: .zero).count == 2)
        #expect(state.waiters.isEmpty)
    }
}
