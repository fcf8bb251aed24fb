import Foundation
import TestSupport
import Testing

@testable import ImageBuilder

@Suite struct CacheScanTests {
    static let key = Fixtures.mcvCudaKey

    @Test func tritonFixtureIsATritonCacheWithSixKernels() throws {
        let scan = try CacheScan(scanning: Fixtures.cuda90)
        #expect(scan.kind == .triton)
        #expect(scan.kernels.count == 6)
        #expect(scan.targets.map(\.description) == ["cuda:90:32"])
        #expect(scan.skipped.isEmpty)
        let paths = scan.files.map(\.path)
        #expect(paths == paths.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
    }

    @Test func vllmRootIsRecognisedByItsCompileCache() throws {
        let scan = try CacheScan(scanning: Fixtures.vllm)
        #expect(scan.kind == .vllm)
        #expect(scan.vllmHashes == ["d4ec7c2a7d"])
        #expect(scan.kernels.count == 6)
        #expect(scan.kernels.allSatisfy { $0.directory.contains("/triton_cache/") })
    }

    @Test func tempDirsLockFilesAndStrayFilesAreLeftOut() throws {
        let dir = try TemporaryDirectory()
        let cache = try dir.copy(Fixtures.mcvCuda, to: "cache")
        try dir.write("partial", to: "cache/\(Self.key)/tmp.pid_42_abcd/add_kernel.cubin")
        try dir.write("", to: "cache/\(Self.key)/add_kernel.json.lock")
        try dir.write("", to: "cache/README")
        try dir.write("", to: "cache/.hidden")
        try dir.write("x", to: "cache/not-a-key/x")
        let scan = try CacheScan(scanning: cache)
        let skipped = Set(scan.skipped.map(\.path))
        #expect(
            skipped == [
                "\(Self.key)/tmp.pid_42_abcd", "\(Self.key)/add_kernel.json.lock", "README", ".hidden", "not-a-key",
            ])
        #expect(!scan.files.contains { $0.path.contains("tmp.pid_") || $0.path.hasSuffix(".lock") })
        #expect(scan.kernels.count == 1)
    }

    @Test func symlinkLeavingTheCacheIsRefused() throws {
        let dir = try TemporaryDirectory()
        let cache = try dir.copy(Fixtures.mcvCuda, to: "cache")
        try dir.write("secret", to: "outside")
        try FileManager.default.createSymbolicLink(
            atPath: cache + "/\(Self.key)/leak.txt", withDestinationPath: "../../outside")
        #expect {
            try CacheScan(scanning: cache)
        } throws: { error in
            guard case BuildError.escapingSymlink(let path, let target)? = error as? BuildError else { return false }
            return path.hasSuffix("leak.txt") && target == "../../outside"
        }
    }

    @Test func absoluteSymlinkInsideTheCacheIsStoredRelative() throws {
        let dir = try TemporaryDirectory()
        let cache = try dir.copy(Fixtures.mcvCuda, to: "cache")
        try FileManager.default.createSymbolicLink(
            atPath: cache + "/\(Self.key)/alias.ptx", withDestinationPath: cache + "/\(Self.key)/add_kernel.ptx")
        let scan = try CacheScan(scanning: cache)
        let link = try #require(scan.files.first { $0.path.hasSuffix("alias.ptx") })
        #expect(link.content == .symlink(target: "add_kernel.ptx"))
    }

    @Test func emptyDirectoryIsAClearError() throws {
        let dir = try TemporaryDirectory()
        #expect(throws: BuildError.emptyDirectory(dir.path)) { try CacheScan(scanning: dir.path) }
    }

    @Test func directoryWithoutCacheEntriesIsNotACache() throws {
        let dir = try TemporaryDirectory()
        try dir.write("hello", to: "notes.txt")
        try dir.write("x", to: "src/main.c")
        #expect {
            try CacheScan(scanning: dir.path)
        } throws: { error in
            guard case BuildError.notACache? = error as? BuildError else { return false }
            return "\(error)".contains("not a Triton or vLLM cache")
        }
    }

    @Test func unreadableFileFailsTheScan() throws {
        // Root reads anything: the check needs an ordinary user.
        guard getuid() != 0 else { return }
        let dir = try TemporaryDirectory()
        let cache = try dir.copy(Fixtures.mcvCuda, to: "cache")
        chmod(cache + "/\(Self.key)/add_kernel.ptx", 0)
        #expect(throws: BuildError.self) { try CacheScan(scanning: cache) }
    }
}
