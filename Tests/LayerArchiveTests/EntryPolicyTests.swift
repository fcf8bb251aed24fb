import Testing

@testable import LayerArchive

/// The rules a layer entry is held to answer which one it breaks; the reason a refused layer reports is its text.
@Suite struct EntryPolicyTests {
    @Test func aPathThatLeavesTheLayerIsRefusedByItsRule() {
        #expect(throws: EntryPolicy.Violation.absolutePath) { try EntryPolicy.normalise("/etc/passwd") }
        #expect(throws: EntryPolicy.Violation.parentComponent) { try EntryPolicy.normalise("a/../../b") }
        #expect(throws: EntryPolicy.Violation.whiteoutAsDirectory) { try EntryPolicy.whiteout(".wh.d/x") }
        #expect(throws: EntryPolicy.Violation.reservedWhiteout) { try EntryPolicy.whiteout("d/.wh..wh.x") }
        #expect(throws: EntryPolicy.Violation.whiteoutNamesNothing) { try EntryPolicy.whiteout("d/.wh..") }
    }

    @Test func aSymlinkThatLeavesTheLayerNamesItsTarget() {
        let leaving = [
            "d": TarEntry(path: "d", kind: .directory, mode: 0o755),
            "d/up": TarEntry(path: "d/up", kind: .symlink, mode: 0o777, linkTarget: "../../etc"),
        ]
        let found = EntryPolicy.validateTree(leaving)
        #expect(found?.path == "d/up")
        #expect(found?.violation == .symlinkLeavesRoot(target: "../../etc"))
        #expect(found?.violation.description == "symlink target '../../etc' leaves the layer root")
    }

    @Test func anEntryBelowAFileNamesThatFile() {
        let below = EntryPolicy.validateTree([
            "f": TarEntry(path: "f", kind: .file, mode: 0o644),
            "f/x": TarEntry(path: "f/x", kind: .file, mode: 0o644),
        ])
        #expect(below?.path == "f/x")
        #expect(below?.violation == .parentNotDirectory(prefix: "f"))
        #expect(below?.violation.description == "parent 'f' is not a directory")
    }
}
