import Foundation
import Glibc
import Testing

@testable import ImageFS

/// The compile index's one-pass rule against the regular expression it replaced, which stays here as the oracle.
@Suite struct CompileIndexScannerTests {
    static let fixture = """
        {(None, 0, 'inductor'): ('fihfzkdily6b', '/home/vllm/.cache/vllm/torch_compile_cache/d4ec7c2a7d/rank_0_0/inductor_cache/fxgraph/ih/fihfzkdily6b/itgql44t'),
         (8, 1, "inductor"): ("feorwmj2", "/home/vllm/.cache/vllm/torch_compile_cache/d4ec7c2a7d/rank_0_0/inductor_cache/fxgraph/eo/feorwmj2/p6mz")}
        """

    /// What the regular expression made of `text` (nil: nothing changed or not UTF-8).
    static func oracle(_ text: String, root: String) -> Data? {
        let base = root.hasSuffix("/") ? String(root.dropLast()) : root
        let expression = try! NSRegularExpression(pattern: #"(['"])/[^'"\n]*?/(torch_compile_cache/[^'"\n]*)\1"#)
        let replacement = "$1" + NSRegularExpression.escapedTemplate(for: base) + "/$2$1"
        let rewritten = expression.stringByReplacingMatches(
            in: text, range: NSRange(text.startIndex..., in: text), withTemplate: replacement)
        return rewritten == text ? nil : Data(rewritten.utf8)
    }

    static func scanned(_ text: String, root: String) -> Data? {
        Relocation.rewrite(Data(text.utf8), name: Relocation.vllmCompileIndex, directory: "", root: root)
    }

    static let cases = [
        fixture,
        "{(None, 0, 'inductor'): ('k', '/mnt/cache/torch_compile_cache/h/rank_0_0/x')}",  // already relocated
        "'/torch_compile_cache/x'",  // no byte between the leading `/` and the marker's
        "'//torch_compile_cache/x'",
        "'/a/torch_compile_cache/'",
        "'/a/torch_compile_cache/b/torch_compile_cache/c'",  // cut at the first marker
        "'/a/torch_compile_cache/b\"",  // closed by the other quote
        "'/a/torch_compile_cache/b\n'",  // a newline ends the literal
        "'/a/torch_compile_cache/b",  // never closed
        "\"'/a/torch_compile_cache/b'\"",  // a match inside the other quotes
        "'x' '/a/torch_compile_cache/b' \"/c/torch_compile_cache/d\"",
        "'/a/torch_compile_cache/b''/c/torch_compile_cache/d'",
        "'/é/ü/torch_compile_cache/日本/x' '/b/torch_compile_cache/😀'",
        "a/torch_compile_cache/b '' \"\" '/' '/a/torch_compile_cache",
        "",
    ]

    @Test(arguments: cases) func rewritesExactlyAsTheExpressionDid(text: String) {
        for root in ["/mnt/cache/", "/mnt/cache", "/", "/r$1\\0/x"] {
            #expect(Self.scanned(text, root: root) == Self.oracle(text, root: root), "\(text.debugDescription) \(root)")
        }
    }

    @Test func agreesWithTheExpressionOnRandomText() {
        let pieces = ["'", "\"", "\n", "/", "a", "torch_compile_cache", "/torch_compile_cache/", "é", " "]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let text = (0..<Int.random(in: 0...14, using: &generator)).map { _ in
                pieces.randomElement(using: &generator)!
            }.joined()
            #expect(Self.scanned(text, root: "/m") == Self.oracle(text, root: "/m"), "\(text.debugDescription)")
        }
    }

    @Test func notUTF8IsLeftAlone() {
        let bytes = Data("'/a/torch_compile_cache/b'".utf8) + Data([0xFF])
        #expect(Relocation.rewrite(bytes, name: Relocation.vllmCompileIndex, directory: "", root: "/m") == nil)
    }

    /// The attack review's line: a literal of `torch_compile_cache/` repeated, closed by the other quote, cost the
    /// expression quadratic steps (12 s of daemon CPU per `stat` for 400 KB). The pass examines each byte a bounded
    /// number of times, whatever the input.
    @Test func aPathologicalMegabyteIsExaminedInLinearWork() {
        let line = "'/" + String(repeating: "torch_compile_cache/", count: 2000) + "\"\n"
        let input = Array(String(repeating: line, count: Relocation.inputLimit / line.utf8.count).utf8)
        var examined = 0
        let outcome = CompileIndexRelocation.relocate(
            input, base: Array("/mnt".utf8), limit: Relocation.outputLimit, examined: &examined)
        #expect(outcome == .unchanged)
        #expect(examined > input.count)
        #expect(examined <= (3 + CompileIndexRelocation.marker.count) * input.count)
    }
}

@Suite struct RelocationOutputBoundTests {
    /// The attack review's group file: 40 000 short children under a directory nested 4 KiB deep made 163 MB of
    /// 0.8 MB. Refused as soon as the projected size passes the bound, before the paths are made.
    @Test func aGroupFileRelocatedPastTheBoundIsServedAsItIs() throws {
        let directory = Array(repeating: String(repeating: "d", count: 200), count: 20).joined(separator: "/") + "/K"
        let children = Dictionary(uniqueKeysWithValues: (0..<40000).map { ("c\($0)", "/K/c\($0)") })
        let data = try JSONSerialization.data(withJSONObject: ["child_paths": children])
        #expect(Relocation.relocate(data, name: "__grp__x.json", directory: directory, root: "/mnt") == .overLimit)
        #expect(Relocation.rewrite(data, name: "__grp__x.json", directory: directory, root: "/mnt") == nil)
        #expect(GroupRelocation.rewrite(data, directory: directory, root: "/mnt") == nil)
        // The same file nearer the root is relocated.
        let near = try #require(Relocation.rewrite(data, name: "__grp__x.json", directory: "K", root: "/mnt"))
        #expect(near.count <= Relocation.outputLimit(forInput: data.count))
    }

    @Test func aCompileIndexRelocatedPastTheBoundIsServedAsItIs() {
        let data = Data(String(repeating: "'//torch_compile_cache/'\n", count: 20000).utf8)
        let root = "/" + String(repeating: "r", count: 4000)
        #expect(Relocation.relocate(data, name: Relocation.vllmCompileIndex, directory: "", root: root) == .overLimit)
        #expect(
            Relocation.relocate(data, name: Relocation.vllmCompileIndex, directory: "", root: "/mnt")
                != .overLimit)
    }

    @Test func theBoundLeavesRoomForALongRootInASmallFile() throws {
        let data = try JSONSerialization.data(withJSONObject: ["child_paths": ["a.ptx": "/o/K/a.ptx"]])
        let root = "/" + String(repeating: "r", count: 4000)
        let rewritten = try #require(GroupRelocation.rewrite(data, directory: "K", root: root))
        #expect(rewritten.count > 4000)
        #expect(Relocation.outputLimit(forInput: Relocation.inputLimit) == Relocation.outputLimit)
    }

    @Test func theProjectedSizeCountsJSONEscapes() {
        #expect(GroupRelocation.encodedLength("a/b") == 3)
        #expect(GroupRelocation.encodedLength("\"\\\n") == 6)
        #expect(GroupRelocation.encodedLength("\u{01}é") == 8)
    }
}

@Suite struct RelocationCacheTests {
    func key(_ inode: UInt64, path: [String] = ["K", "__grp__x.json"], changed: Int = 1000) -> RelocationCache.Key {
        var info = stat()
        info.st_ino = UInt(inode)
        info.st_size = 10
        info.st_ctim.tv_sec = changed
        return RelocationCache.Key(path: path, info: info)
    }

    @Test func holdsAtMostItsCapacityInBytesLeastRecentlyUsedOut() {
        var state = RelocationCache.State(capacity: 10_000)
        let value = Data(count: 3000)
        let cost = RelocationCache.State.cost(of: value, for: key(1))
        state.insert(value, for: key(1))
        state.insert(value, for: key(2))
        state.insert(value, for: key(3))
        #expect(state.bytes == 3 * cost)
        #expect(state.value(for: key(1)) == .some(value))  // now the most recently used
        state.insert(value, for: key(4))
        #expect(state.bytes <= 10_000)
        #expect(state.value(for: key(2)) == nil)
        #expect(state.value(for: key(1)) == .some(value))
        #expect(state.value(for: key(3)) == .some(value))
        #expect(state.value(for: key(4)) == .some(value))
    }

    @Test func entriesWithNothingToHoldAreBoundedToo() {
        var state = RelocationCache.State(capacity: 100_000)
        for inode in 0..<10_000 { state.insert(nil, for: key(UInt64(inode))) }
        #expect(state.bytes <= 100_000)
        #expect(state.count == 100_000 / RelocationCache.State.cost(of: nil, for: key(0)))
        #expect(state.value(for: key(9999)) == .some(nil))
        #expect(state.value(for: key(0)) == nil)
    }

    @Test func anEntryLargerThanTheCacheIsNotKept() {
        var state = RelocationCache.State(capacity: 10_000)
        state.insert(Data(count: 100), for: key(1))
        state.insert(Data(count: 20_000), for: key(2))
        #expect(state.value(for: key(2)) == nil)
        #expect(state.value(for: key(1)) == .some(Data(count: 100)))
    }

    @Test func aVersionIsItsInodeTimesSizeAndPath() {
        var state = RelocationCache.State(capacity: 10_000)
        state.insert(Data("a".utf8), for: key(1))
        #expect(state.value(for: key(1, path: ["L", "__grp__x.json"])) == nil)
        #expect(state.value(for: key(1, changed: 1001)) == nil)
    }

    @Test func aFileChangedWithinTheLastSecondIsNotKept() {
        let cache = RelocationCache(capacity: 10_000)
        cache.insert(Data("a".utf8), for: key(1, changed: time(nil)))
        #expect(cache.value(for: key(1, changed: time(nil))) == nil)
        cache.insert(Data("a".utf8), for: key(2))
        #expect(cache.value(for: key(2)) == .some(Data("a".utf8)))
    }
}

@Suite struct OverlayRelocationCacheTests {
    func bytes(of handle: UInt64, in world: OverlayWorld) -> Data? {
        guard case .bytes(let data)? = world.overlay.handles.withLock({ $0[handle] }) else { return nil }
        return data
    }

    @Test func aVersionIsRelocatedOnceItsOpensShareOneBufferAndAWriteIsSeenAtOnce() throws {
        let world = try OverlayWorld()
        let key = try world.lookup("KEY", as: alice)
        func write(_ path: String) throws {
            let opened =
                try (try? world.lookup("KEY/__grp__g.json", as: alice)).map {
                    try world.overlay.open(ino: $0.ino, flags: O_WRONLY | O_TRUNC, caller: alice)
                }
                ?? world.overlay.create(
                    parent: key.ino, name: "__grp__g.json", mode: 0o644, flags: O_WRONLY, caller: alice
                ).1
            try world.write(#"{"child_paths": {"a.bin": "\#(path)/KEY/a.bin"}}"#, to: opened.handle)
            world.overlay.release(handle: opened.handle)
        }
        try write("/old")
        // Past the second in which it changed, so the cache may keep this version (see `RelocationCache`).
        Thread.sleep(forTimeInterval: 2.1)
        let relocated = #"{"child_paths":{"a.bin":"/mnt/triton/KEY/a.bin"}}"#
        #expect(try world.lookup("KEY/__grp__g.json", as: alice).size == Int64(relocated.utf8.count))
        #expect(world.overlay.relocations.bytes > 0)
        let ino = try world.lookup("KEY/__grp__g.json", as: alice).ino
        let first = try world.overlay.open(ino: ino, flags: O_RDONLY, caller: alice)
        let second = try world.overlay.open(ino: ino, flags: O_RDONLY, caller: alice)
        defer { for opened in [first, second] { world.overlay.release(handle: opened.handle) } }
        #expect(try world.read(first) == relocated)
        let (one, two) = (
            try #require(bytes(of: first.handle, in: world)), try #require(bytes(of: second.handle, in: world))
        )
        #expect(one.withUnsafeBytes { $0.baseAddress } == two.withUnsafeBytes { $0.baseAddress })
        try write("/a/longer/old/root")
        #expect(try world.contents("KEY/__grp__g.json", as: alice) == relocated)
        try write("/mnt/triton")
        #expect(
            try world.contents("KEY/__grp__g.json", as: alice)
                == #"{"child_paths": {"a.bin": "/mnt/triton/KEY/a.bin"}}"#)
    }
}
