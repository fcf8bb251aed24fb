import Testing

@testable import ImageFS

/// The overlay's inode table as a plain value: kernel lookups and forgets in the orders the kernel sends them.
@Suite struct OverlayInodesTests {
    typealias Name = OverlayInodes.Name
    static let root = OverlayInodes.rootIno
    static let uid: OverlayInodes.Space = 1000

    static func upperFile(_ parent: UInt64, _ name: String, space: OverlayInodes.Space = uid) -> OverlayInodes.Identity
    {
        .named(Name(parent: parent, name: name, space: space), .upperFile(space), preferred: nil)
    }

    static func upperDirectory(_ parent: UInt64, _ name: String) -> OverlayInodes.Identity {
        .named(Name(parent: parent, name: name, space: uid), .upperDirectory(uid), preferred: nil)
    }

    static func imageDirectory(_ parent: UInt64, _ name: String, treeIno: UInt64) -> OverlayInodes.Identity {
        .named(Name(parent: parent, name: name, space: nil), .directory, preferred: treeIno)
    }

    @Test func anInodeLivesUntilTheKernelForgetsEveryLookup() {
        var table = OverlayInodes()
        let ino = table.lookedUp(Self.upperFile(Self.root, "a"))
        let r1 = table.lookedUp(Self.upperFile(Self.root, "a"))
        #expect(r1 == ino)
        #expect(table.inode(ino)?.lookups == 2)
        let r2 = table.forget(ino, count: 1)
        #expect(!r2)
        #expect(table.count == 1)
        let r3 = table.forget(ino, count: 1)
        #expect(r3)
        #expect(table.count == 0)
        // A name looked up again gets a fresh entry, never the forgotten number.
        let r4 = table.lookedUp(Self.upperFile(Self.root, "a"))
        #expect(r4 != ino)
    }

    @Test func forgetsOfUnknownInodesAndTheRootChangeNothing() {
        var table = OverlayInodes()
        let ino = table.lookedUp(Self.upperFile(Self.root, "a"))
        let r5 = table.forget(Self.root, count: 1)
        #expect(!r5)
        let r6 = table.forget(ino + 1000, count: 3)
        #expect(!r6)
        #expect(table.inode(ino)?.lookups == 1)
    }

    @Test func imageEntriesKeepTheTreesNumbers() {
        var table = OverlayInodes()
        let directory = table.lookedUp(Self.imageDirectory(Self.root, "KEY", treeIno: 17))
        #expect(directory == 17)
        let r7 = table.lookedUp(.lowerFile(42))
        #expect(r7 == 42)
        let r8 = table.forget(17, count: 1)
        #expect(r8)
        let r9 = table.lookedUp(Self.imageDirectory(Self.root, "KEY", treeIno: 17))
        #expect(r9 == 17)
        #expect(table.names(of: 17) == [Name(parent: Self.root, name: "KEY", space: nil)])
    }

    @Test func aDirectoryStaysWhileAnythingBelowItLives() {
        var table = OverlayInodes()
        let key = table.lookedUp(Self.upperDirectory(Self.root, "KEY"))
        let file = table.lookedUp(Self.upperFile(key, "k.cubin"))
        // The kernel may evict the directory's inode before the file's (the file's stays cached, nameless).
        let r10 = table.forget(key, count: 1)
        #expect(!r10)
        #expect(table.names(of: file)?.map(\.name) == ["KEY", "k.cubin"])
        let r11 = table.forget(file, count: 1)
        #expect(r11)
        #expect(table.count == 0)
    }

    /// Triton's put: mkdir KEY/tmp.pid_X, create a file in it, os.replace it into KEY/, rmdir the temp dir; then
    /// the kernel forgets, in any order.
    @Test func tritonsPutLeavesNothingOnceTheKernelForgets() {
        var table = OverlayInodes()
        let key = table.lookedUp(Self.upperDirectory(Self.root, "KEY"))
        for round in 0..<100 {
            let tmp = table.lookedUp(Self.upperDirectory(key, "tmp.pid_1_\(round)"))
            let file = table.lookedUp(Self.upperFile(tmp, "k\(round).cubin"))
            table.rename(
                Name(parent: tmp, name: "k\(round).cubin", space: Self.uid),
                to: Name(parent: key, name: "k\(round).cubin", space: Self.uid))
            #expect(table.names(of: file)?.map(\.name) == ["KEY", "k\(round).cubin"])
            table.unbind(Name(parent: key, name: "tmp.pid_1_\(round)", space: Self.uid))
            let r12 = table.forget(tmp, count: 1)
            #expect(r12, "an empty, removed, forgotten temp dir goes at once")
        }
        #expect(table.count == 101)
        for ino in table.inodes.keys where ino != key { table.forget(ino, count: 1) }
        table.forget(key, count: 1)
        #expect(table.count == 0)
    }

    @Test func renamingADirectoryMovesWhatIsBelowIt() {
        var table = OverlayInodes()
        let a = table.lookedUp(Self.upperDirectory(Self.root, "a"))
        let inner = table.lookedUp(Self.upperDirectory(a, "inner"))
        let file = table.lookedUp(Self.upperFile(inner, "f"))
        let b = table.lookedUp(Self.upperDirectory(Self.root, "b"))
        table.rename(
            Name(parent: Self.root, name: "a", space: Self.uid), to: Name(parent: b, name: "a2", space: Self.uid))
        #expect(table.names(of: file)?.map(\.name) == ["b", "a2", "inner", "f"])
        let r13 = table.lookedUp(Self.upperDirectory(b, "a2"))
        #expect(r13 == a)
        let r14 = table.lookedUp(Self.upperDirectory(Self.root, "a"))
        #expect(r14 != a)
        #expect(table.inode(inner)?.lookups == 1)
    }

    @Test func renamingOverANameUnbindsWhatItNamed() {
        var table = OverlayInodes()
        let old = table.lookedUp(Self.upperFile(Self.root, "target"))
        let new = table.lookedUp(Self.upperFile(Self.root, "source"))
        table.rename(
            Name(parent: Self.root, name: "source", space: Self.uid),
            to: Name(parent: Self.root, name: "target", space: Self.uid))
        #expect(table.inode(old)?.names == [], "the replaced file's inode lives on, nameless, until forgotten")
        let r15 = table.lookedUp(Self.upperFile(Self.root, "target"))
        #expect(r15 == new)
        let r16 = table.forget(old, count: 1)
        #expect(r16)
    }

    @Test func unlinkedFilesKeepTheirInodeUntilForgotten() {
        var table = OverlayInodes()
        let ino = table.lookedUp(Self.upperFile(Self.root, "f"))
        table.unbind(Name(parent: Self.root, name: "f", space: Self.uid))
        #expect(table.inode(ino) != nil)
        #expect(table.names(of: ino) == nil)
        let r17 = table.lookedUp(Self.upperFile(Self.root, "f"))
        #expect(r17 != ino)
        let r18 = table.forget(ino, count: 1)
        #expect(r18)
    }

    @Test func hardLinksShareAnInodeUntilBothNamesGo() {
        var table = OverlayInodes()
        let ino = table.lookedUp(Self.upperFile(Self.root, "a"))
        table.bind(Name(parent: Self.root, name: "b", space: Self.uid), to: ino)
        let r19 = table.lookedUp(Self.upperFile(Self.root, "b"))
        #expect(r19 == ino)
        table.unbind(Name(parent: Self.root, name: "a", space: Self.uid))
        #expect(table.names(of: ino)?.map(\.name) == ["b"])
        // Renaming one name of a file onto another of the same file does nothing (rename(2)).
        table.bind(Name(parent: Self.root, name: "c", space: Self.uid), to: ino)
        table.rename(
            Name(parent: Self.root, name: "b", space: Self.uid), to: Name(parent: Self.root, name: "c", space: Self.uid)
        )
        #expect(Set(table.inode(ino)!.names.map(\.name)) == ["b", "c"])
    }

    @Test func eachUpperHasItsOwnNames() {
        var table = OverlayInodes()
        let mine = table.lookedUp(Self.upperFile(Self.root, "k", space: 1000))
        let theirs = table.lookedUp(Self.upperFile(Self.root, "k", space: 1001))
        #expect(mine != theirs)
        #expect(table.name(of: mine, in: 1001) == nil)
        #expect(table.name(of: theirs, in: 1001)?.name == "k")
    }

    @Test func aRenamedImageFileStandsForTheCallersCopyUntilForgotten() {
        var table = OverlayInodes()
        let image = table.lookedUp(.lowerFile(40))
        table.alias(image, in: Self.uid, to: Name(parent: Self.root, name: "moved", space: Self.uid))
        let copy = try! #require(table.alias(of: image, in: Self.uid))
        #expect(table.alias(of: image, in: 1001) == nil)
        let r20 = table.lookedUp(Self.upperFile(Self.root, "moved"))
        #expect(r20 == copy, "the copy's next lookup finds it")
        let r21 = table.forget(copy, count: 1)
        #expect(r21 == false, "the image file's inode still points at it")
        let r22 = table.forget(image, count: 1)
        #expect(r22)
        #expect(table.count == 0)
    }

    @Test func sharedDirectoriesAreFoundByPath() {
        var table = OverlayInodes()
        let key = table.lookedUp(Self.imageDirectory(Self.root, "KEY", treeIno: 17))
        let sub = table.lookedUp(Self.imageDirectory(key, "sub", treeIno: 18))
        #expect(table.sharedDirectory([]) == Self.root)
        #expect(table.sharedDirectory(["KEY", "sub"]) == sub)
        #expect(table.sharedDirectory(["KEY", "other"]) == nil)
    }

    @Test func listingsSeeNumbersWithoutTakingAny() {
        var table = OverlayInodes()
        #expect(table.peek(Self.upperFile(Self.root, "a")) == nil)
        #expect(table.peek(Self.imageDirectory(Self.root, "KEY", treeIno: 17)) == 17)
        #expect(table.peek(.lowerFile(40)) == 40)
        #expect(table.count == 0)
        let ino = table.lookedUp(Self.upperFile(Self.root, "a"))
        #expect(table.peek(Self.upperFile(Self.root, "a")) == ino)
    }

    @Test func theTableGivesBackItsStorageAfterABurst() {
        var table = OverlayInodes()
        let inos = (0..<50_000).map { table.lookedUp(Self.upperFile(Self.root, "f\($0)")) }
        let peak = table.storageCapacity
        for ino in inos { table.forget(ino, count: 1) }
        #expect(table.count == 0)
        #expect(table.storageCapacity * 10 < peak, "capacity \(table.storageCapacity) after a peak of \(peak)")
    }
}
