import Foundation
import Glibc
import NodeService
import TestSupport
import Testing

/// What `mount` finds at its mountpoint before it mounts, and what it refuses.
@Suite struct MountPlacementTests {
    @Test func anEmptyDirectoryTakesTheMountOnTop() throws {
        let directory = try TemporaryDirectory()
        let placement = try MountPlacement.inspect(directory.path, replace: false)
        #expect(placement.existing == .none)
        #expect(!placement.replacesLiveMount)
    }

    @Test func aMissingMountpointInAnExistingDirectoryIsMade() throws {
        let directory = try TemporaryDirectory()
        let placement = try MountPlacement.inspect(directory.file("mnt"), replace: false)
        #expect(placement.existing == .none)
        var info = stat()
        #expect(stat(directory.file("mnt"), &info) == 0 && info.st_mode & S_IFMT == S_IFDIR)
    }

    @Test func whatCannotBeMountedOnSaysWhy() throws {
        let directory = try TemporaryDirectory()
        try directory.write("x", to: "file")
        #expect {
            try MountPlacement.inspect(directory.file("file"), replace: false)
        } throws: { "\($0)".hasSuffix("is not a directory") }
        #expect {
            try MountPlacement.inspect(directory.file("no/such/parent"), replace: false)
        } throws: { "\($0)".contains("No such file or directory") }
        // The root filesystem is a mount point, and not mcvfs's: never mounted over, even with --replace.
        #expect {
            try MountPlacement.inspect("/", replace: true)
        } throws: { "\($0)".contains("is already a mount point") }
    }
}
