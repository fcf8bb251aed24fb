import BlobCache
import ContentHash
import Foundation
import OCI
import Synchronization
import TestSupport
import Testing

@Suite struct DirectoryBlobStoreTests {
    let dir: TemporaryDirectory
    let store: DirectoryBlobStore

    init() throws {
        dir = try TemporaryDirectory()
        store = try DirectoryBlobStore(root: dir.url)
    }

    func blobFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path + "/blobs/sha256").sorted()
    }

    func ingestTemps() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path + "/ingest").filter { $0.hasSuffix(".tmp") }
    }

    @Test func batchCommitsWhatVerifiesAndNothingElse() throws {
        let good = Data("kernel".utf8)
        let other = Data("metadata".utf8)
        let forged = SHA256Hasher.digest(Data("what the TOC promised".utf8))
        let results = store.commitBatch([
            (SHA256Hasher.digest(good), good), (forged, Data("tampered".utf8)), (SHA256Hasher.digest(other), other),
        ])
        #expect(try results[SHA256Hasher.digest(good)]?.get() == store.path(for: SHA256Hasher.digest(good)))
        #expect(try results[SHA256Hasher.digest(other)]?.get() != nil)
        guard case .failure(.digestMismatch)? = results[forged] else {
            Issue.record("a blob that does not match its digest was committed: \(String(describing: results[forged]))")
            return
        }
        #expect(!store.contains(forged))
        #expect(try blobFiles().count == 2)
        #expect(try ingestTemps().isEmpty)
        let again = store.commitBatch([(SHA256Hasher.digest(good), good)])  // already there: kept, not rewritten
        #expect(try again[SHA256Hasher.digest(good)]?.get() == store.path(for: SHA256Hasher.digest(good)))
    }

    @Test func createsLayout() throws {
        var isDirectory: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: dir.path + "/blobs/sha256", isDirectory: &isDirectory))
        #expect(isDirectory.boolValue)
        #expect(FileManager.default.fileExists(atPath: dir.path + "/ingest", isDirectory: &isDirectory))
    }

    @Test func ingestVerifiesAndCommits() throws {
        let data = Data("hello, kernel cache".utf8)
        let digest = sha256(data)
        #expect(!store.contains(digest))
        #expect(store.path(for: digest) == nil)

        let path = try store.ingest(digest, expectedSize: Int64(data.count)) { writer in
            try writer.write(data.prefix(5))
            try writer.write(data.dropFirst(5))
        }
        #expect(path == dir.path + "/blobs/sha256/" + digest.hex)
        #expect(store.contains(digest))
        #expect(store.path(for: digest) == path)
        #expect(try store.size(of: digest) == Int64(data.count))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == data)
        #expect(try store.read(digest, offset: 7, count: 100) == data.dropFirst(7))
        #expect(try store.read(digest, offset: 100, count: 10).isEmpty)
        #expect(try ingestTemps().isEmpty)

        let handle = try store.open(digest)
        #expect(handle.size == Int64(data.count))
        #expect(try handle.read(offset: 0, count: 5) == Data("hello".utf8))
    }

    @Test func ingestWithoutExpectedDigestAddressesByContent() throws {
        let data = Data(repeating: 0x5a, count: 3 << 20)  // several write chunks
        let stored = try store.ingest(data: data)
        #expect(stored.digest == sha256(data))
        #expect(stored.size == Int64(data.count))
        #expect(try Data(contentsOf: URL(fileURLWithPath: stored.path)) == data)
        // Same bytes again: the existing blob is kept, no temp left.
        let again = try store.ingest(data: data, expected: stored.digest)
        #expect(again == stored)
        #expect(try blobFiles() == [stored.digest.hex])
        #expect(try ingestTemps().isEmpty)
    }

    @Test func corruptDataIsNeverCommitted() throws {
        let good = Data("the bytes the manifest promised".utf8)
        let bad = Data("the bytes the registry sent!!!!".utf8)
        #expect(good.count == bad.count)
        let digest = sha256(good)
        let error = #expect(throws: CacheError.self) {
            try store.ingest(digest, expectedSize: Int64(bad.count)) { try $0.write(bad) }
        }
        #expect(error == .digestMismatch(expected: digest, actual: sha256(bad), size: Int64(bad.count)))
        #expect(!store.contains(digest))
        #expect(try blobFiles().isEmpty)
        #expect(try ingestTemps().isEmpty)
        #expect(error?.description.contains("not stored") == true)
    }

    @Test func wrappedVerificationMismatchMatchesStoreError() throws {
        let data = Data("x".utf8)
        let expected = sha256(Data("y".utf8))
        let mismatch = DigestMismatch(expected: expected, actual: sha256(data), size: 1)
        #expect(CacheError(mismatch) == .digestMismatch(expected: expected, actual: sha256(data), size: 1))
    }

    @Test func tooManyBytesFailAtTheOverflowingWrite() throws {
        let data = Data("0123456789".utf8)
        let digest = sha256(data)
        var writesAfterFailure = 0
        let error = #expect(throws: CacheError.self) {
            try store.ingest(digest, expectedSize: 4) { writer in
                try writer.write(data.prefix(3))
                do { try writer.write(data.dropFirst(3)) } catch {
                    writesAfterFailure += 1
                    throw error
                }
            }
        }
        #expect(error == .sizeMismatch(digest: digest, expected: 4, actual: 10))
        #expect(writesAfterFailure == 1)
        #expect(try blobFiles().isEmpty)
        #expect(try ingestTemps().isEmpty)
    }

    @Test func tooFewBytesAreRefused() throws {
        let data = Data("short".utf8)
        let error = #expect(throws: CacheError.self) {
            try store.ingest(sha256(data), expectedSize: 50) { try $0.write(data) }
        }
        #expect(error == .sizeMismatch(digest: sha256(data), expected: 50, actual: 5))
        #expect(try blobFiles().isEmpty)
        #expect(try ingestTemps().isEmpty)
    }

    @Test func producerFailureLeavesNothing() throws {
        struct NetworkDropped: Error {}
        let data = Data("partial".utf8)
        #expect(throws: NetworkDropped.self) {
            try store.ingest(sha256(data), expectedSize: nil) { writer in
                try writer.write(data)
                throw NetworkDropped()
            }
        }
        #expect(try blobFiles().isEmpty)
        #expect(try ingestTemps().isEmpty)
    }

    @Test func ingestFileVerifiesByHashing() throws {
        let source = dir.file("download.bin")
        let data = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try data.write(to: URL(fileURLWithPath: source))
        let stored = try store.ingest(fileAt: source, expected: sha256(data))
        #expect(stored.digest == sha256(data))
        #expect(FileManager.default.fileExists(atPath: source))  // the source is left alone

        let wrong = sha256(Data("other".utf8))
        #expect(throws: CacheError.digestMismatch(expected: wrong, actual: sha256(data), size: Int64(data.count))) {
            try store.ingest(fileAt: source, expected: wrong)
        }
        #expect(!store.contains(wrong))
        #expect(throws: CacheError.self) { try store.ingest(fileAt: dir.file("missing")) }
    }

    @Test func listTotalSizeRemoveAndTouch() throws {
        let a = try store.ingest(data: Data("a".utf8))
        let b = try store.ingest(data: Data("bbbb".utf8))
        // A stray file that is not a digest is not listed.
        try Data("junk".utf8).write(to: URL(fileURLWithPath: dir.path + "/blobs/sha256/README"))
        let listed = try store.list()
        #expect(Set(listed.map(\.digest)) == [a.digest, b.digest])
        #expect(listed.first { $0.digest == b.digest }?.size == 4)
        #expect(try store.totalSize() == 5)

        // touch moves the access time forward (eviction order).
        let old = Date(timeIntervalSince1970: 1_000_000)
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: a.path)
        var times = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, a.path, &times, 0) == 0)
        #expect(try store.list().first { $0.digest == a.digest }!.lastAccess < Date(timeIntervalSince1970: 2_000_000))
        try store.touch(a.digest)
        #expect(try store.list().first { $0.digest == a.digest }!.lastAccess > Date().addingTimeInterval(-60))

        #expect(try store.remove(a.digest))
        #expect(try !store.remove(a.digest))
        #expect(!store.contains(a.digest))
        #expect(try store.totalSize() == 4)
        #expect(throws: CacheError.notFound(a.digest)) { try store.size(of: a.digest) }
        #expect(throws: CacheError.notFound(a.digest)) { try store.open(a.digest) }
        #expect(throws: CacheError.notFound(a.digest)) { try store.touch(a.digest) }
    }

    @Test func concurrentIngestOfOneDigestFromManyThreads() throws {
        let data = Data(repeating: 7, count: 256 * 1024)
        let digest = sha256(data)
        let produced = Counter()
        let failures = Counter()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            do {
                let path = try store.ensure(digest, expectedSize: Int64(data.count)) { writer in
                    produced.increment()
                    try writer.write(data)
                }
                if path != store.path(for: digest) { failures.increment() }
            } catch {
                failures.increment()
            }
        }
        #expect(produced.count == 1)  // single download: the others waited on the lock and found the blob
        #expect(failures.count == 0)

        // Plain ingest (no lock) racing on the same digest is safe too: unique temps, one atomic rename each.
        let other = Data(repeating: 9, count: 64 * 1024)
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            do { try store.ingest(data: other, expected: sha256(other)) } catch { failures.increment() }
        }
        #expect(failures.count == 0)
        #expect(try blobFiles().sorted() == [digest.hex, sha256(other).hex].sorted())
        #expect(try ingestTemps().isEmpty)
    }

    @Test func failedEnsureReleasesTheLockAndCanBeRetried() throws {
        let data = Data("retry me".utf8)
        let digest = sha256(data)
        #expect(throws: CacheError.self) {
            try store.ensure(digest, expectedSize: Int64(data.count)) { try $0.write(Data("garbage!".utf8)) }
        }
        #expect(!store.contains(digest))
        let path = try store.ensure(digest, expectedSize: Int64(data.count)) { try $0.write(data) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == data)
        #expect(try ingestTemps().isEmpty)
    }

    @Test func anotherProcessHoldingTheIngestLockMakesUsWaitAndReuse() throws {
        let data = Data("blob another process downloads".utf8)
        let digest = sha256(data)
        let payload = dir.file("payload")
        try data.write(to: URL(fileURLWithPath: payload))
        // The other process: takes the ingest lock, announces it, then commits the blob the way the store does
        // (temp in ingest/, rename into blobs/sha256) before releasing the lock.
        let script = #"""
            import fcntl, os, sys, time
            root, hexd, payload = sys.argv[1:4]
            fd = os.open(f"{root}/ingest/{hexd}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("locked", flush=True)
            time.sleep(0.7)
            tmp = f"{root}/ingest/{hexd}.python.tmp"
            with open(tmp, "wb") as f:
                f.write(open(payload, "rb").read()); f.flush(); os.fsync(f.fileno())
            os.rename(tmp, f"{root}/blobs/sha256/{hexd}")
            os.close(fd)
            """#
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, dir.path, digest.hex, payload]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        defer { process.waitUntilExit() }
        var announced = Data()
        while !String(decoding: announced, as: UTF8.self).contains("locked") {
            let chunk = out.fileHandleForReading.availableData
            try #require(!chunk.isEmpty, "helper exited before taking the lock")
            announced += chunk
        }
        let produced = Counter()
        let path = try store.ensure(digest, expectedSize: Int64(data.count)) { writer in
            produced.increment()
            try writer.write(data)
        }
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(produced.count == 0)  // we waited for the other process and used its blob
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == data)
    }

    @Test func ourIngestLockExcludesAnotherProcess() throws {
        let digest = sha256(Data("locked".utf8))
        let probe = #"""
            import fcntl, os, sys
            fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print("free")
            except BlockingIOError:
                print("busy")
            """#
        let lockPath = dir.path + "/ingest/\(digest.hex).lock"
        let whileHeld = try store.withIngestLock(digest) { try runChecked(["python3", "-c", probe, lockPath]).stdout }
        #expect(whileHeld.trimmingCharacters(in: .whitespacesAndNewlines) == "busy")
        let afterwards = try runChecked(["python3", "-c", probe, lockPath]).stdout
        #expect(afterwards.trimmingCharacters(in: .whitespacesAndNewlines) == "free")
    }

    @Test func crashLeftoversAreCleanedButLiveWritersKept() throws {
        let ingest = dir.path + "/ingest"
        let dead = ingest + "/\(String(repeating: "a", count: 64)).4242.dead.tmp"
        let staleLock = ingest + "/\(String(repeating: "b", count: 64)).lock"
        let live = ingest + "/\(String(repeating: "c", count: 64)).4343.live.tmp"
        for path in [dead, staleLock, live] {
            try Data("partial".utf8).write(to: URL(fileURLWithPath: path))
        }
        // A writer in another process that is still alive holds the flock on its temp file.
        let holder = #"""
            import fcntl, os, sys, time
            fd = os.open(sys.argv[1], os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("locked", flush=True)
            sys.stdin.read()
            """#
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", holder, live]
        let out = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardInput = input
        try process.run()
        defer {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
        var announced = Data()
        while !String(decoding: announced, as: UTF8.self).contains("locked") {
            let chunk = out.fileHandleForReading.availableData
            try #require(!chunk.isEmpty, "helper exited before taking the lock")
            announced += chunk
        }

        _ = try DirectoryBlobStore(root: dir.url)  // a restart after a crash
        #expect(!FileManager.default.fileExists(atPath: dead))
        #expect(!FileManager.default.fileExists(atPath: staleLock))
        #expect(FileManager.default.fileExists(atPath: live))

        try input.fileHandleForWriting.close()
        process.waitUntilExit()
        _ = try DirectoryBlobStore(root: dir.url)  // the writer died without committing
        #expect(!FileManager.default.fileExists(atPath: live))
    }

    @Test func relativeRootIsRefused() throws {
        #expect(throws: CacheError.self) { try DirectoryBlobStore(root: URL(string: "relative/dir")!) }
        let file = dir.file("plain-file")
        try Data().write(to: URL(fileURLWithPath: file))
        #expect(throws: CacheError.self) { try DirectoryBlobStore(root: URL(fileURLWithPath: file)) }
    }
}

@Suite struct BlobWriterTests {
    @Test func writerOverACustomSinkHashesAndEnforcesSize() throws {
        let collected = Mutex(Data())
        let writer = BlobWriter(expectedDigest: nil, expectedSize: 6) { bytes throws(CacheError) in
            collected.withLock { $0.append(contentsOf: bytes) }
        }
        try writer.write(Data("abc".utf8))
        try writer.write(Data("def".utf8))
        #expect(throws: CacheError.sizeMismatch(digest: nil, expected: 6, actual: 7)) {
            try writer.write(Data("g".utf8))
        }
        #expect(writer.bytesWritten == 6)
        #expect(collected.withLock { $0 } == Data("abcdef".utf8))
        #expect(writer.finish() == sha256(Data("abcdef".utf8)))
    }
}
