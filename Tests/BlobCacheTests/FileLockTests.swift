import Foundation
import Glibc
import TestSupport
import Testing
import TimeBudget

@testable import BlobCache

/// Lock waits end at the operation's deadline, and lock files are their owner's alone.
struct FileLockTests {
    @Test func aLockHeldElsewhereFailsAtTheDeadlineWithAnErrorNamingIt() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("x.lock")
        // flock locks belong to open file descriptions: a second open in this process is "elsewhere".
        let holder = open(path, O_RDWR | O_CREAT, 0o600)
        defer { close(holder) }
        #expect(flock(holder, LOCK_EX) == 0)
        #expect(throws: CacheError.lockTimeout(path: path)) {
            try Deadline.bind(.after(.milliseconds(200))) {
                try FileLock.withExclusive(path: path) { Issue.record("ran without the lock") }
            }
        }
        #expect("\(CacheError.lockTimeout(path: path))".contains("lslocks"))
        #expect(throws: CacheError.lockTimeout(path: path)) {
            try Deadline.bind(.after(.zero)) { try FileLock.with(path: path, exclusive: false) {} }
        }
        #expect(flock(holder, LOCK_UN) == 0)
        #expect(try Deadline.bind(.after(.milliseconds(200))) { try FileLock.withExclusive(path: path) { 7 } } == 7)
    }

    @Test func sharedHoldersDoNotWaitForEachOther() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("leases.lock")
        let holder = open(path, O_RDWR | O_CREAT, 0o600)
        defer { close(holder) }
        #expect(flock(holder, LOCK_SH) == 0)
        #expect(try Deadline.bind(.after(.zero)) { try FileLock.with(path: path, exclusive: false) { true } })
    }

    @Test func anOpenLockFileOfAnEarlierVersionIsNarrowedToItsOwner() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("old.lock")
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(chmod(path, 0o644) == 0)
        try FileLock.withExclusive(path: path) {}
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
    }

    @Test func aStoreClosesItsCacheDirectoryToOthers() throws {
        let directory = try TemporaryDirectory()
        #expect(chmod(directory.path, 0o755) == 0)
        _ = try DirectoryBlobStore(root: directory.url)
        var info = stat()
        #expect(stat(directory.path, &info) == 0 && info.st_mode & 0o777 == 0o700)
    }
}
