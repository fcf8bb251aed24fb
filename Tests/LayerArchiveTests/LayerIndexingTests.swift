import BlobCache
import ContentHash
import Foundation
import LayerArchive
import OCI
import Synchronization
import TestSupport
import Testing

@Suite struct LayerIndexingTests {
    let dir: TemporaryDirectory
    let store: DirectoryBlobStore
    let cache: LayerIndexCache

    init() throws {
        dir = try TemporaryDirectory()
        store = try DirectoryBlobStore(root: dir.url.appendingPathComponent("cache"))
        cache = try LayerIndexCache(store: store)
    }

    /// Puts the layer file into the store the way a pull would, returning its digest and committed path.
    func commitLayer(_ path: String) throws -> (Digest, String) {
        let stored = try store.ingest(fileAt: path)
        return (stored.digest, stored.path)
    }

    enum Compression: String, CaseIterable, Sendable { case none, gzip, zstd }

    /// The fixture cache as MCV lays out a layer: `io.triton.cache/<KEY>/...`, built by GNU tar.
    func fixtureLayer(_ compression: Compression) throws -> String {
        let tar = dir.file("layer.tar")
        try runChecked([
            "tar", "-C", (Fixtures.cuda90 as NSString).deletingLastPathComponent, "--owner=0", "--group=0",
            "--transform", "s,^cuda-90,io.triton.cache,", "-cf", tar, "cuda-90",
        ])
        switch compression {
        case .none: return tar
        case .gzip:
            try runChecked(["gzip", "-k", "-n", tar])
            return tar + ".gz"
        case .zstd:
            try runChecked(["zstd", "-q", tar, "-o", tar + ".zst"])
            return tar + ".zst"
        }
    }

    @Test(arguments: Compression.allCases) func indexesTheFixtureCacheWithByteIdenticalFiles(_ compression: Compression)
        throws
    {
        let (layer, blob) = try commitLayer(try fixtureLayer(compression))
        let index = try cache.build(layer: layer, blobPath: blob, mediaType: MediaType.ociLayerTar)
        #expect(index.layer == layer)

        let expected = try regularFiles(below: Fixtures.cuda90)
        try #require(expected.count > 10)
        let files = index.entries.filter { $0.kind == .file }
        #expect(files.count == expected.count)
        let pack = try LayerPack(index: index, file: MappedFile(path: try #require(store.packPath(for: layer))))
        for (relative, bytes) in expected {
            let entry = try #require(files.first { $0.path == "io.triton.cache/" + relative }, "\(relative) missing")
            #expect(entry.size == Int64(bytes.count))
            #expect(entry.content == SHA256Hasher.digest(bytes))
            #expect(pack.data(of: try #require(entry.content)) == bytes)
            #expect(entry.mode == 0o644 || entry.mode == 0o664 || entry.mode == 0o600 || entry.mode == 0o755)
        }
        let directories = Set(index.entries.filter { $0.kind == .directory }.map(\.path))
        #expect(directories.contains("io.triton.cache"))
        let keys = Set(expected.keys.map { "io.triton.cache/" + $0.split(separator: "/")[0] })
        #expect(keys.isSubset(of: directories))
        #expect(index.entries.allSatisfy { !$0.path.hasPrefix("/") && !$0.path.hasPrefix("./") })
        #expect(FileManager.default.fileExists(atPath: cache.path(for: layer)))
    }

    @Test func indexIsReloadedFromDiskWithoutTheBlob() throws {
        let (layer, blob) = try commitLayer(try fixtureLayer(.gzip))
        let built = try cache.build(layer: layer, blobPath: blob)
        unlink(blob)  // the layer blob is gone; only the index and the pack remain

        let reopened = try LayerIndexCache(store: try DirectoryBlobStore(root: store.root))
        #expect(reopened.load(layer: layer) == built)
        #expect(try reopened.build(layer: layer, blobPath: blob) == built)

        // Once the pack is evicted (with its layer, as one unit) the index is incomplete: build must read the
        // layer again, and fails clearly when it is gone too.
        #expect(try store.remove(layer))
        #expect(store.packPath(for: layer) == nil)
        #expect(!reopened.isComplete(built))
        #expect(throws: TarError.self) { try reopened.build(layer: layer, blobPath: blob) }
    }

    @Test func concurrentBuildsOfOneLayerAgree() throws {
        let (layer, blob) = try commitLayer(try fixtureLayer(.zstd))
        let results = Mutex<[LayerIndex]>([])
        let failures = Counter()
        let cache = self.cache
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            do {
                let index = try cache.build(layer: layer, blobPath: blob)
                results.withLock { $0.append(index) }
            } catch {
                failures.increment()
            }
        }
        #expect(failures.count == 0)
        let all = results.withLock { $0 }
        #expect(all.count == 4)
        #expect(Set(all).count == 1)
        #expect(cache.load(layer: layer) == all.first)
    }

    @Test func corruptOrForeignIndexFilesAreIgnored() throws {
        let (layer, blob) = try commitLayer(try fixtureLayer(.none))
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: cache.path(for: layer)))
        #expect(cache.load(layer: layer) == nil)
        let index = try cache.build(layer: layer, blobPath: blob)  // rebuilt over the garbage
        #expect(cache.load(layer: layer) == index)

        // An index file stored under the wrong name is not trusted.
        let other = SHA256Hasher.digest(Data("other".utf8))
        try FileManager.default.copyItem(atPath: cache.path(for: layer), toPath: cache.path(for: other))
        #expect(cache.load(layer: other) == nil)
    }

    struct HostileCase: Sendable, CustomTestStringConvertible {
        var name: String
        var members: [TarMember]
        var entry: String
        var reason: String
        var gnu = false
        var testDescription: String { name }
    }

    static let hostileCases: [HostileCase] = [
        HostileCase(name: "parent traversal", members: [.file("../evil")], entry: "../evil", reason: "'..'"),
        HostileCase(
            name: "traversal inside a path", members: [.dir("a"), .file("a/../../evil")], entry: "a/../../evil",
            reason: "'..'"),
        HostileCase(
            name: "absolute path", members: [.file("/etc/cron.d/evil")], entry: "/etc/cron.d/evil",
            reason: "absolute path"),
        HostileCase(
            name: "escaping symlink", members: [.dir("a"), .symlink("a/up", to: "../../etc")], entry: "a/up",
            reason: "leaves the layer root"),
        HostileCase(
            name: "absolute symlink", members: [.symlink("passwd", to: "/etc/passwd")], entry: "passwd",
            reason: "is absolute"),
        HostileCase(
            name: "symlink escaping through another symlink",
            members: [.dir("sub"), .symlink("sub/root", to: ".."), .symlink("evil", to: "sub/root/..")],
            entry: "evil", reason: "leaves the layer root"),
        HostileCase(
            name: "entry below a symlink",
            members: [.dir("real"), .symlink("link", to: "real"), .file("link/file")], entry: "link/file",
            reason: "passes through symlink 'link'"),
        HostileCase(
            name: "character device",
            members: [TarMember(name: "null", type: .chr, mode: 0o666)], entry: "null", reason: "character device"),
        HostileCase(
            name: "fifo", members: [TarMember(name: "pipe", type: .fifo, mode: 0o644)], entry: "pipe", reason: "FIFO"),
        HostileCase(
            name: "hard link outside the layer", members: [.hardlink("shadow", to: "../../etc/shadow")],
            entry: "shadow", reason: "outside the layer"),
        HostileCase(
            name: "hard link to an absolute path", members: [.hardlink("shadow", to: "/etc/shadow")], entry: "shadow",
            reason: "outside the layer"),
        HostileCase(
            name: "hard link to no earlier entry", members: [.hardlink("a", to: "b"), .file("b")], entry: "a",
            reason: "no earlier file"),
        HostileCase(name: "setuid file", members: [.file("su", mode: 0o4755)], entry: "su", reason: "setuid"),
        HostileCase(name: "setgid file", members: [.file("sg", mode: 0o2755)], entry: "sg", reason: "setgid"),
        HostileCase(
            name: "reserved whiteout name", members: [.file(".wh..wh.plnk")], entry: ".wh..wh.plnk",
            reason: "reserved whiteout"),
        HostileCase(
            name: "symlink posing as a whiteout", members: [.symlink(".wh.K", to: "K")], entry: ".wh.K",
            reason: "not a regular file"),
        HostileCase(
            name: "whiteout below a symlink",
            members: [.dir("real"), .symlink("link", to: "real"), .file("link/.wh.x", "")], entry: "link/x",
            reason: "passes through symlink 'link'"),
        HostileCase(
            name: "opaque whiteout of a symlinked directory",
            members: [.dir("real"), .symlink("link", to: "real"), .file("link/.wh..wh..opq", "")], entry: "link",
            reason: "passes through symlink 'link'"),
        HostileCase(
            name: "whiteout name as a directory", members: [.file(".wh.d/x")], entry: ".wh.d/x",
            reason: "whiteout name used as a directory"),
        HostileCase(
            name: "invalid UTF-8 name", members: [.file("bad<FF>name")], entry: "bad", reason: "not valid UTF-8",
            gnu: true),
    ]

    @Test(arguments: hostileCases) func hostileEntriesRefuseTheLayer(_ hostile: HostileCase) throws {
        let tar = dir.file("hostile.tar")
        // A good file first, so a refusal is not just "empty layer".
        try makeTar(
            [.dir("io.triton.cache"), .file("io.triton.cache/ok.json", "{}")] + hostile.members, at: tar,
            gnu: hostile.gnu)
        let (layer, blob) = try commitLayer(tar)
        let error = #expect(throws: TarError.self) { try cache.build(layer: layer, blobPath: blob) }
        guard case .hostileEntry(let path, let reason)? = error else {
            Issue.record("expected hostileEntry, got \(String(describing: error))")
            return
        }
        #expect(path.hasPrefix(hostile.entry), "reported '\(path)': \(reason)")
        #expect(reason.contains(hostile.reason), "reported '\(path)': \(reason)")
        #expect(!reason.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: cache.path(for: layer)))
        #expect(cache.load(layer: layer) == nil)
    }

    @Test func safeLinksAreRecorded() throws {
        let tar = dir.file("links.tar")
        try makeTar(
            [
                .dir("io.triton.cache"), .dir("io.triton.cache/K"),
                .file("io.triton.cache/K/add_kernel.cubin", "cubin bytes"),
                .symlink("io.triton.cache/K/alias.cubin", to: "add_kernel.cubin"),
                .symlink("io.triton.cache/up", to: "../io.triton.cache/K"),
                .symlink("dot", to: "."),
                .hardlink("io.triton.cache/K/copy.cubin", to: "io.triton.cache/K/add_kernel.cubin"),
                .hardlink("io.triton.cache/K/copy2.cubin", to: "./io.triton.cache/K/copy.cubin"),
            ], at: tar)
        let (layer, blob) = try commitLayer(tar)
        let index = try cache.build(layer: layer, blobPath: blob)
        let byPath = Dictionary(uniqueKeysWithValues: index.entries.map { ($0.path, $0) })
        let content = SHA256Hasher.digest(Data("cubin bytes".utf8))
        #expect(byPath["io.triton.cache/K/alias.cubin"]?.kind == .symlink)
        #expect(byPath["io.triton.cache/K/alias.cubin"]?.linkTarget == "add_kernel.cubin")
        #expect(byPath["io.triton.cache/up"]?.linkTarget == "../io.triton.cache/K")
        #expect(byPath["dot"]?.kind == .symlink)
        let copy = try #require(byPath["io.triton.cache/K/copy.cubin"])
        #expect(copy.kind == .hardlink)
        #expect(copy.linkTarget == "io.triton.cache/K/add_kernel.cubin")
        #expect(copy.content == content)
        #expect(copy.size == 11)
        #expect(byPath["io.triton.cache/K/copy2.cubin"]?.linkTarget == "io.triton.cache/K/add_kernel.cubin")
    }

    @Test func whiteoutsAreRecordedAsTheirOwnKinds() throws {
        let tar = dir.file("whiteouts.tar")
        try makeTar(
            [
                .dir("io.triton.cache"), .file("io.triton.cache/.wh.OLDKEY", ""),
                .dir("io.triton.cache/KEY"), .file("io.triton.cache/KEY/.wh..wh..opq", ""),
                .file("io.triton.cache/KEY/new.json", "{}"), .file(".wh..wh..opq", ""),
            ], at: tar)
        let (layer, blob) = try commitLayer(tar)
        let index = try cache.build(layer: layer, blobPath: blob)
        let whiteouts = index.entries.filter { $0.kind == .whiteout }.map(\.path)
        let opaque = index.entries.filter { $0.kind == .opaqueWhiteout }.map(\.path)
        #expect(whiteouts == ["io.triton.cache/OLDKEY"])
        #expect(Set(opaque) == ["io.triton.cache/KEY", ""])
        #expect(index.entries.allSatisfy { !$0.path.contains(".wh.") })
        #expect(index.entries.filter { $0.kind == .file }.map(\.path) == ["io.triton.cache/KEY/new.json"])
        #expect(cache.load(layer: layer) == index)
    }

    @Test func duplicatePathsKeepTheLastDefinition() throws {
        let tar = dir.file("dup.tar")
        try makeTar([.file("a.json", "first"), .file("b.json", "b"), .file("a.json", "second")], at: tar)
        let (layer, blob) = try commitLayer(tar)
        let index = try cache.build(layer: layer, blobPath: blob)
        #expect(index.entries.map(\.path) == ["a.json", "b.json"])
        #expect(index.entries[0].content == SHA256Hasher.digest(Data("second".utf8)))
    }

    @Test func truncatedArchivesFailClearlyAndPersistNothing() throws {
        let big = dir.file("big.bin")
        try Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }).write(to: URL(fileURLWithPath: big))
        for gzip in [false, true] {
            let tar = dir.file(gzip ? "t.tar.gz" : "t.tar")
            try makeTar([.file("small", "x"), TarMember(name: "big.bin", type: .file, src: big)], at: tar, gzip: gzip)
            let full = try Data(contentsOf: URL(fileURLWithPath: tar))
            try full.prefix(full.count / 2).write(to: URL(fileURLWithPath: tar))
            let (layer, blob) = try commitLayer(tar)
            let error = #expect(throws: TarError.self) { try cache.build(layer: layer, blobPath: blob) }
            switch error {
            case .corrupt?, .archive?: break
            default: Issue.record("expected a corruption error, got \(String(describing: error))")
            }
            #expect(!FileManager.default.fileExists(atPath: cache.path(for: layer)))
        }
    }

    @Test func entryLargerThanTheBlobIsCorrupt() throws {
        // A hand-made ustar header claiming 1 MiB of data in a 2 KiB file.
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) { for (i, b) in text.utf8.enumerated() { header[offset + i] = b } }
        put("huge.bin", at: 0)
        put("0000644\0", at: 100)
        put("0000000\0", at: 108)
        put("0000000\0", at: 116)
        put(String(1 << 20, radix: 8).leftPad(11) + "\0", at: 124)
        put("00000000000\0", at: 136)
        put("0", at: 156)
        put("ustar\0", at: 257)
        put("00", at: 263)
        put("        ", at: 148)
        let sum = header.reduce(0) { $0 + Int($1) }
        put(String(sum, radix: 8).leftPad(6) + "\0 ", at: 148)
        let tar = dir.file("huge.tar")
        try Data(header + [UInt8](repeating: 0, count: 1536)).write(to: URL(fileURLWithPath: tar))
        let (layer, blob) = try commitLayer(tar)
        let error = #expect(throws: TarError.self) { try cache.build(layer: layer, blobPath: blob) }
        guard case .corrupt(let path, let reason)? = error else {
            Issue.record("expected corrupt, got \(String(describing: error))")
            return
        }
        #expect(path == "huge.bin")
        #expect(reason.contains("extends past the end"), "\(reason)")
    }

    @Test func limitsBoundDecompressionBombs() throws {
        let tar = dir.file("bomb.tar.gz")
        try makeTar(
            [.file("a", String(repeating: "0", count: 5000)), .file("b", String(repeating: "0", count: 5000))],
            at: tar, gzip: true)
        let (layer, blob) = try commitLayer(tar)
        let small = try LayerIndexCache(
            store: store, limits: .init(maxEntrySize: 1 << 20, maxTotalSize: 8000, maxEntries: 100))
        #expect(throws: TarError.limitExceeded(path: "b", reason: "layer expands past 8000 bytes")) {
            try small.build(layer: layer, blobPath: blob)
        }
        let few = try LayerIndexCache(store: store, limits: .init(maxEntries: 1))
        #expect(throws: TarError.self) { try few.build(layer: layer, blobPath: blob) }
    }

    @Test func nonTarContentAndMediaTypesAreRefused() throws {
        let junk = dir.file("junk")
        try Data("this is not an archive at all, just text".utf8).write(to: URL(fileURLWithPath: junk))
        let (layer, blob) = try commitLayer(junk)
        let error = #expect(throws: TarError.self) { try cache.build(layer: layer, blobPath: blob) }
        guard case .archive? = error else {
            Issue.record("expected an archive error, got \(String(describing: error))")
            return
        }
        #expect(throws: TarError.unsupportedMediaType(MediaType.cosignSimpleSigning)) {
            try cache.build(layer: layer, blobPath: blob, mediaType: MediaType.cosignSimpleSigning)
        }
    }

    @Test(arguments: [false, true]) func nonASCIIUTF8NamesAreKept(gnu: Bool) throws {
        let tar = dir.file("unicode.tar")
        try makeTar([.dir("données"), .file("données/ядро.json", "{}")], at: tar, gnu: gnu)
        let (layer, blob) = try commitLayer(tar)
        let index = try cache.build(layer: layer, blobPath: blob)
        #expect(index.entries.map(\.path) == ["données", "données/ядро.json"])
    }

    @Test func symlinkLoopsAreRefusedNotFollowedForever() throws {
        let tar = dir.file("loop.tar")
        try makeTar([.symlink("a", to: "b/x"), .symlink("b", to: "a/y")], at: tar)
        let (layer, blob) = try commitLayer(tar)
        #expect(throws: TarError.self) { try cache.build(layer: layer, blobPath: blob) }
        #expect(cache.load(layer: layer) == nil)
    }

    @Test func emptyLayerIndexesToNothing() throws {
        let tar = dir.file("empty.tar")
        try makeTar([], at: tar)
        let (layer, blob) = try commitLayer(tar)
        #expect(try cache.build(layer: layer, blobPath: blob).entries.isEmpty)
    }
}

extension String {
    fileprivate func leftPad(_ width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
