import Foundation
import Glibc
import TestSupport
import Testing

@testable import BlobCache

/// Scratch directories under the cache: private, removed by their operation, and swept once nobody holds them.
@Suite struct WorkDirectoryTests {
    @Test func aWorkDirectoryIsPrivateAndGoesWithItsLockWhenRemoved() throws {
        let directory = try TemporaryDirectory()
        let layout = try CacheLayout(root: directory.file("cache"))
        let work = try WorkDirectory.make("publish", in: layout)
        var info = stat()
        #expect(stat(work.path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o700)
        #expect(work.path.hasPrefix(layout.work + "/\(getpid())-publish-"))
        #expect(FileManager.default.fileExists(atPath: work.path + ".lock"))
        try directory.write("staged", to: "cache/work/" + (work.path as NSString).lastPathComponent + "/f")
        work.remove()
        #expect(!FileManager.default.fileExists(atPath: work.path))
        #expect(!FileManager.default.fileExists(atPath: work.path + ".lock"))
    }

    /// What a killed operation left (its lock free, whatever pid its name says: PID 1 of a DaemonSet's container
    /// looks alive everywhere) goes at the next; a directory whose lock is held stays, whatever its pid or age.
    @Test func onlyTheScratchNobodyHoldsIsSwept() throws {
        let directory = try TemporaryDirectory()
        let layout = try CacheLayout(root: directory.file("cache"))
        let held = try WorkDirectory.make("publish", in: layout)
        defer { held.remove() }
        let killed = layout.work + "/1-publish-killed"
        let unlocked = layout.work + "/\(getpid())-compact-cut-short"
        for path in [killed, unlocked] {
            try FileManager.default.createDirectory(atPath: path + "/cache", withIntermediateDirectories: true)
            try Data(repeating: 1, count: 4096).write(to: URL(fileURLWithPath: path + "/cache/kernel.cubin"))
        }
        // The killed operation's lock file stays behind, unlocked (its holder's descriptor closed when it died).
        FileManager.default.createFile(atPath: killed + ".lock", contents: nil)
        let next = try WorkDirectory.make("publish", in: layout)
        defer { next.remove() }
        #expect(!FileManager.default.fileExists(atPath: killed))
        #expect(!FileManager.default.fileExists(atPath: killed + ".lock"))
        #expect(!FileManager.default.fileExists(atPath: unlocked))
        #expect(FileManager.default.fileExists(atPath: held.path))
        #expect(FileManager.default.fileExists(atPath: next.path))
    }

    /// A command run by hand needs no cache directory.
    @Test func aTemporaryDirectoryIsPrivateAndGoesWhenRemoved() throws {
        let work = try WorkDirectory.temporary("push")
        var info = stat()
        #expect(stat(work.path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o700)
        work.remove()
        #expect(!FileManager.default.fileExists(atPath: work.path))
    }
}
