import Foundation
import Glibc
import TestSupport
import Testing

@testable import BlobCache

/// Scratch directories under the cache: private, removed by their operation, and swept once their process is gone.
@Suite struct WorkDirectoryTests {
    /// The pid of a process that has exited.
    func deadPid() throws -> pid_t {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/true")
        try process.run()
        process.waitUntilExit()
        return process.processIdentifier
    }

    func age(_ path: String, by seconds: TimeInterval) throws {
        try FileManager.default.setAttributes(
            [.modificationDate: Date().addingTimeInterval(-seconds)], ofItemAtPath: path)
    }

    @Test func aWorkDirectoryIsPrivateAndGoesWhenRemoved() throws {
        let directory = try TemporaryDirectory()
        let layout = try CacheLayout(root: directory.file("cache"))
        let work = try WorkDirectory.make("publish", in: layout)
        var info = stat()
        #expect(stat(work.path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o700)
        #expect(work.path.hasPrefix(layout.work + "/\(getpid())-publish-"))
        try directory.write("staged", to: "cache/work/" + (work.path as NSString).lastPathComponent + "/f")
        work.remove()
        #expect(!FileManager.default.fileExists(atPath: work.path))
    }

    /// A publish killed mid-way leaves its staging copy; the next operation removes it, and nothing of a process
    /// that still runs, nor of one that may run in another PID namespace and is younger than the stale age.
    @Test func theScratchOfAKilledProcessIsSweptByTheNextOne() throws {
        let directory = try TemporaryDirectory()
        let layout = try CacheLayout(root: directory.file("cache"))
        let dead = try deadPid()
        let killed = layout.work + "/\(dead)-publish-A"
        let recent = layout.work + "/\(dead)-publish-B"
        let running = layout.work + "/\(getpid())-compact-C"
        for path in [killed, recent, running] {
            try FileManager.default.createDirectory(atPath: path + "/cache", withIntermediateDirectories: true)
        }
        try age(killed, by: WorkDirectory.staleAge + 60)
        try age(running, by: WorkDirectory.staleAge + 60)
        let work = try WorkDirectory.make("publish", in: layout)
        defer { work.remove() }
        #expect(!FileManager.default.fileExists(atPath: killed))
        #expect(FileManager.default.fileExists(atPath: recent))
        #expect(FileManager.default.fileExists(atPath: running))
    }
}
