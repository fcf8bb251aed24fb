import Foundation
import Glibc
import TestSupport
import Testing

@testable import ImageFS

/// What a user can do to their own upper directly on disk changes nothing outside it (issue 21).
@Suite struct UpperSafetyTests {
    func create(_ name: String, in world: OverlayWorld, as caller: Caller, text: String = "x") throws {
        let key = try world.lookup("KEY", as: caller)
        let (_, opened) = try world.overlay.create(
            parent: key.ino, name: name, mode: 0o644, flags: O_WRONLY, caller: caller)
        try world.write(text, to: opened.handle)
        world.overlay.release(handle: opened.handle)
    }

    @Test func aWorkDirectoryLinkInAnUpperIsNeverWrittenThroughAndARestartRemovesOnlyTheLink() throws {
        let world = try OverlayWorld()
        try create("first.bin", in: world, as: alice)
        let upper = world.upperRoot + "/1000"
        let victim = try TemporaryDirectory()
        try victim.write("root's", to: "precious")
        #expect(symlink(victim.path, upper + "/.mcvfs-work") == 0)

        try create("second.bin", in: world, as: alice, text: "alice's")
        #expect(try world.contents("KEY/second.bin", as: alice) == "alice's")
        #expect(try FileManager.default.contentsOfDirectory(atPath: victim.path) == ["precious"])

        _ = try OverlayFileSystem(lower: world.overlay.lower, options: world.overlay.options, owner: (0, 0))
        #expect(try FileManager.default.contentsOfDirectory(atPath: victim.path) == ["precious"])
        var info = stat()
        #expect(lstat(upper + "/.mcvfs-work", &info) != 0, "the link itself is gone")
        #expect(stat(world.upperRoot + "/.mcvfs-work/1000", &info) == 0 && info.st_mode & 0o777 == 0o700)
    }

    @Test func anUpperOwnedBySomeoneElseIsRefused() throws {
        let world = try OverlayWorld()
        #expect(mkdir(world.upperRoot + "/1001", 0o700) == 0)
        #expect(chown(world.upperRoot + "/1001", 1000, 1000) == 0)
        #expect(throws: FSError.self) { try world.lookup("KEY", as: bob) }
    }

    @Test func aGroupFileAboveTheBoundIsServedAsItIsWithoutBeingRead() throws {
        let world = try OverlayWorld()
        try create("__grp__x.json", in: world, as: alice, text: #"{"child_paths": {}}"#)
        #expect(truncate(world.upperRoot + "/1000/KEY/__grp__x.json", off_t(Relocation.inputLimit + 1)) == 0)
        let attributes = try world.lookup("KEY/__grp__x.json", as: alice)
        #expect(attributes.size == Int64(Relocation.inputLimit + 1))
        let text = try world.contents("KEY/__grp__x.json", as: alice)
        #expect(text.hasPrefix(#"{"child_paths": {}}"#), "the bytes on disk, unrelocated")
    }

    @Test func aFIFONamedLikeAGroupFileAnswersAtOnce() throws {
        let world = try OverlayWorld()
        try create("plain.bin", in: world, as: alice)
        #expect(mkfifo(world.upperRoot + "/1000/KEY/__grp__f.json", 0o644) == 0)
        let fifo = try world.lookup("KEY/__grp__f.json", as: alice)
        #expect(throws: FSError.invalidArgument) {
            try world.overlay.open(ino: fifo.ino, flags: O_RDONLY, caller: alice)
        }
    }
}
