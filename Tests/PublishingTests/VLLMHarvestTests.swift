import Foundation
import TestSupport
import Testing

@testable import Publishing

/// What a publish takes of vLLM's compile cache in an upper: complete hash directories only, nothing followed.
@Suite struct VLLMHarvestTests {
    static let aot = String(repeating: "c4", count: 32)
    let directory: TemporaryDirectory
    let upper: String

    init() throws {
        directory = try TemporaryDirectory()
        upper = directory.file("upper/0")
        let hashDir = "upper/0/torch_compile_cache/torch_aot_compile/\(Self.aot)"
        try directory.write("kernel", to: "\(hashDir)/inductor_cache/q6/cq6.so")
        try directory.write("", to: "\(hashDir)/inductor_cache/locks/cq6.lock")
        try directory.write("artifact", to: "\(hashDir)/rank_0_0/model")
        try directory.write("partial", to: "upper/0/torch_compile_cache/0123456789/rank_0_0/backbone/artifact")
    }

    @Test func aCompleteAOTDirectoryIsTakenWithoutItsLocks() throws {
        let harvest = VLLMHarvest(uppers: [upper]) { _ in false }
        #expect(harvest.entries.map(\.hash) == [Self.aot])
        #expect(harvest.entries.first?.files == ["inductor_cache/q6/cq6.so", "rank_0_0/model"])
        let reason = harvest.skipped.first { $0.path.hasSuffix("/0123456789") }?.reason ?? ""
        #expect(reason.contains("vllm_compile_cache.py"))

        let staged = directory.file("staged")
        #expect(try harvest.stage(harvest.entries[0], into: staged))
        let model = "\(staged)/torch_compile_cache/torch_aot_compile/\(Self.aot)/rank_0_0/model"
        #expect(FileManager.default.contents(atPath: model) == Data("artifact".utf8))
    }

    @Test func withoutItsModelAnAOTDirectoryIsIncomplete() throws {
        try FileManager.default.removeItem(
            atPath: "\(upper)/torch_compile_cache/torch_aot_compile/\(Self.aot)/rank_0_0/model")
        let harvest = VLLMHarvest(uppers: [upper]) { _ in false }
        #expect(harvest.entries.isEmpty)
        #expect(harvest.skipped.contains { $0.reason.hasPrefix("incomplete: no rank_*/model") })
        let directory = try #require(
            UpperDirectory(path: "\(upper)/torch_compile_cache/torch_aot_compile/\(Self.aot)"))
        guard case .failure(let refusal) = VLLMHarvest.check(directory, aot: true, limits: VLLMHarvest.Limits())
        else {
            Issue.record("an AOT directory without its model passed the check")
            return
        }
        #expect(refusal == .noModel)
        #expect(
            UpperHarvest.Refusal.overLimits(files: 2, bytes: 10).description == "refused: over 2 files or 10 bytes")
    }

    @Test func aSymlinkRefusesTheDirectory() throws {
        try FileManager.default.createSymbolicLink(
            atPath: "\(upper)/torch_compile_cache/torch_aot_compile/\(Self.aot)/inductor_cache/passwd",
            withDestinationPath: "/etc/passwd")
        let harvest = VLLMHarvest(uppers: [upper]) { _ in false }
        #expect(harvest.entries.isEmpty)
        #expect(harvest.skipped.contains { $0.reason.contains("inductor_cache/passwd is not a regular file") })
    }

    @Test func aKnownHashIsLeftOut() {
        let harvest = VLLMHarvest(uppers: [upper]) { $0 == Self.aot }
        #expect(harvest.entries.isEmpty)
    }
}
