import Foundation
import ImageFS
import Testing

@Suite struct GroupRelocationTests {
    let key = "5W7KJQDTJCL4UGPMKKCS7TEEPZKSWOY4774SZQ6674FWSXG5MNXQ"

    func document(_ children: [String: String]) -> Data {
        try! JSONSerialization.data(withJSONObject: ["child_paths": children])
    }

    func children(_ data: Data?) throws -> [String: String] {
        let bytes = try #require(data)
        let object = try #require(try JSONSerialization.jsonObject(with: bytes) as? [String: Any])
        return try #require(object["child_paths"] as? [String: String])
    }

    @Test func rewritesPathsOfTheBuildMachineToTheConsumerRoot() throws {
        let old = "/opt/app-root/src/.triton/cache/\(key)"
        let data = document([
            "add_kernel.cubin": "\(old)/add_kernel.cubin", "add_kernel.json": "\(old)/add_kernel.json",
        ])
        let rewritten = try children(GroupRelocation.rewrite(data, directory: key, root: "/mnt/triton"))
        #expect(rewritten["add_kernel.cubin"] == "/mnt/triton/\(key)/add_kernel.cubin")
        #expect(rewritten["add_kernel.json"] == "/mnt/triton/\(key)/add_kernel.json")
    }

    @Test func nestedCacheDirectoriesKeepTheirRelativePath() throws {
        let data = document(["k.ptx": "/home/vllm/.cache/vllm/x/triton_cache/\(key)/k.ptx"])
        let rewritten = try children(
            GroupRelocation.rewrite(data, directory: "x/triton_cache/\(key)", root: "/root/.cache/vllm/"))
        #expect(rewritten["k.ptx"] == "/root/.cache/vllm/x/triton_cache/\(key)/k.ptx")
    }

    @Test func pathsThatDoNotFollowTheRuleAreLeftAlone() throws {
        let data = document([
            "a.ptx": "/elsewhere/OTHERKEY/a.ptx",  // parent is not the group's own key
            "b.ptx": "/opt/\(key)/renamed.ptx",  // basename differs from the name
        ])
        #expect(GroupRelocation.rewrite(data, directory: key, root: "/mnt") == nil)
    }

    @Test func listFormGroupsOfOldTritonAndGarbageAreNotTouched() {
        let list = try! JSONSerialization.data(withJSONObject: ["child_paths": ["a.ptx", "b.json"]])
        #expect(GroupRelocation.rewrite(list, directory: key, root: "/mnt") == nil)
        #expect(GroupRelocation.rewrite(Data("not json".utf8), directory: key, root: "/mnt") == nil)
    }

    @Test func alreadyRelocatedIsANoOp() {
        let data = document(["a.ptx": "/mnt/\(key)/a.ptx"])
        #expect(GroupRelocation.rewrite(data, directory: key, root: "/mnt") == nil)
    }
}

@Suite struct CompileIndexRelocationTests {
    let index = """
        {(None, 0, 'inductor'): ('fihfzkdily6b', '/home/vllm/.cache/vllm/torch_compile_cache/d4ec7c2a7d/rank_0_0/inductor_cache/fxgraph/ih/fihfzkdily6b/itgql44t'),
         (8, 1, "inductor"): ("feorwmj2", "/home/vllm/.cache/vllm/torch_compile_cache/d4ec7c2a7d/rank_0_0/inductor_cache/fxgraph/eo/feorwmj2/p6mz")}
        """

    @Test func artifactPathsMoveUnderTheConsumersCacheRoot() throws {
        let rewritten = try #require(
            Relocation.rewrite(
                Data(index.utf8), name: "vllm_compile_cache.py", directory: "torch_compile_cache/d4ec7c2a7d/rank_0_0",
                root: "/mnt/cache/"))
        let text = String(decoding: rewritten, as: UTF8.self)
        #expect(
            text.contains(
                "'/mnt/cache/torch_compile_cache/d4ec7c2a7d/rank_0_0/inductor_cache/fxgraph/ih/fihfzkdily6b/itgql44t'"))
        #expect(
            text.contains(
                "\"/mnt/cache/torch_compile_cache/d4ec7c2a7d/rank_0_0/inductor_cache/fxgraph/eo/feorwmj2/p6mz\""))
        #expect(!text.contains("/home/vllm"))
        #expect(text.contains("(None, 0, 'inductor')"), "keys are left as they are")
    }

    @Test func otherFilesAndRelocatedIndexesAreLeftAlone() {
        let relocated = "{(None, 0, 'inductor'): ('k', '/mnt/cache/torch_compile_cache/h/rank_0_0/x')}"
        #expect(
            Relocation.rewrite(Data(relocated.utf8), name: "vllm_compile_cache.py", directory: "", root: "/mnt/cache")
                == nil)
        #expect(Relocation.rewrite(Data(index.utf8), name: "other.py", directory: "", root: "/mnt/cache") == nil)
        #expect(Relocation.applies(to: "__grp__k.json") && Relocation.applies(to: "vllm_compile_cache.py"))
        #expect(!Relocation.applies(to: "k.json"))
    }
}
