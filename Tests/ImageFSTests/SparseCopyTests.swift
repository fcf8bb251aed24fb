import Foundation
import Glibc
import TestSupport
import Testing
import TimeBudget

@testable import ImageFS

/// A copy-up writes a user's data, never the size they claim: holes stay holes, too much data is refused, and a
/// copy ends at its operation's deadline.
struct SparseCopyTests {
    let directory: TemporaryDirectory

    init() throws {
        directory = try TemporaryDirectory()
    }

    func file(_ name: String) throws -> Int32 {
        let fd = open(directory.path + "/" + name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        return fd
    }

    func write(_ text: String, to fd: Int32, at offset: Int64) {
        _ = Array(text.utf8).withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, off_t(offset)) }
    }

    func contents(_ fd: Int32, at offset: Int64, count: Int) -> String {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, count, off_t(offset)) }
        return String(decoding: bytes[0..<max(n, 0)], as: UTF8.self)
    }

    func status(_ fd: Int32) -> stat {
        var info = stat()
        fstat(fd, &info)
        return info
    }

    @Test func aSparseFileIsCopiedAsItsDataWithItsSize() throws {
        let source = try file("source")
        let target = try file("target")
        defer {
            close(source)
            close(target)
        }
        write("head", to: source, at: 0)
        write("tail", to: source, at: (1 << 30) - 4)
        try SparseCopy.copy(from: source, to: target)
        let copied = status(target)
        #expect(copied.st_size == 1 << 30)
        #expect(Int64(copied.st_blocks) * 512 < 1 << 20)
        #expect(contents(target, at: 0, count: 4) == "head")
        #expect(contents(target, at: (1 << 30) - 4, count: 4) == "tail")
        #expect(contents(target, at: 1 << 20, count: 4) == "\0\0\0\0")
    }

    @Test func moreDataThanTheLimitIsRefused() throws {
        let source = try file("source")
        let target = try file("target")
        defer {
            close(source)
            close(target)
        }
        write(String(repeating: "x", count: 8192), to: source, at: 0)
        #expect(throws: FSError.tooLarge) { try SparseCopy.copy(from: source, to: target, limit: 4096) }
        try SparseCopy.copy(from: source, to: target, limit: 8192)
        #expect(status(target).st_size == 8192)
    }

    @Test func aCopyStopsAtItsDeadline() throws {
        let source = try file("source")
        let target = try file("target")
        defer {
            close(source)
            close(target)
        }
        write("data", to: source, at: 0)
        #expect(throws: FSError.self) {
            try Deadline.bind(.after(.zero)) { () throws(FSError) in try SparseCopy.copy(from: source, to: target) }
        }
        #expect(status(target).st_size == 0)
    }
}
