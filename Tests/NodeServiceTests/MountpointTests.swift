import Foundation
import Glibc
import NodeService
import TestSupport
import Testing

/// What `mount` checks before it mounts: the directory exists, is one, and nothing live is mounted there.
@Suite struct MountpointTests {
    @Test func anEmptyDirectoryIsReady() throws {
        let directory = try TemporaryDirectory()
        try Mountpoint.prepare(directory.path)
        #expect(!Mountpoint.isMounted(directory.path))
    }

    @Test func whatCannotBeMountedOnSaysWhy() throws {
        let directory = try TemporaryDirectory()
        try directory.write("x", to: "file")
        #expect {
            try Mountpoint.prepare(directory.file("file"))
        } throws: { "\($0)".hasSuffix("is not a directory") }
        #expect {
            try Mountpoint.prepare(directory.file("missing"))
        } throws: { "\($0)".contains("No such file or directory") }
        // The root filesystem is always a live mount point.
        #expect(Mountpoint.isMounted("/"))
        #expect {
            try Mountpoint.prepare("/")
        } throws: { "\($0)".contains("already a mount point; run `mcvfs unmount /` first") }
    }
}
