import BlobCache
import ContentHash
import Foundation
import LayerArchive
import OCI
import TestSupport
import Testing

/// The eStargz writer and the TOC reader, without a registry: what a mount would fetch by range is sliced out
/// of the written blob here.
@Suite struct EStargzTests {
    struct Layer {
        var blob: Data
        var written: EStargzWriter.Written
    }

    func entries(in dir: TemporaryDirectory, big: Int = 10_000) throws -> [LayerWriter.Entry] {
        try dir.write("kernel bytes", to: "src/a.cubin")
        try dir.write(String(repeating: "0123456789abcdef", count: big / 16), to: "src/big.llir")
        return [
            .directory("io.triton.cache"),
            .directory("io.triton.cache/K"),
            LayerWriter.Entry(
                path: "io.triton.cache/K/a.cubin", content: .file(sourcePath: dir.path + "/src/a.cubin", size: 12)),
            LayerWriter.Entry(
                path: "io.triton.cache/K/big.llir",
                content: .file(sourcePath: dir.path + "/src/big.llir", size: Int64(big / 16 * 16))),
            LayerWriter.Entry(path: "io.triton.cache/K/a.json", content: .bytes(Data(#"{"target":{}}"#.utf8))),
            LayerWriter.Entry(
                path: "io.triton.cache/K/__grp__a.json", content: .bytes(Data(#"{"child_paths":{}}"#.utf8))),
            LayerWriter.Entry(path: "io.triton.cache/K/empty", content: .bytes(Data())),
            LayerWriter.Entry(path: "io.triton.cache/K/link", content: .symlink(target: "a.cubin")),
        ]
    }

    func write(_ entries: [LayerWriter.Entry], chunkSize: Int64 = 4096) throws -> Layer {
        let dir = try TemporaryDirectory()
        var blob = Data()
        let written = try EStargzWriter.write(entries, scratch: dir.path + "/scratch.tar", chunkSize: chunkSize) {
            blob.append(contentsOf: $0)
        }
        return Layer(blob: blob, written: written)
    }

    /// Footer → TOC offset → TOC JSON, as `LayerFetcher` does with two range requests.
    func toc(of blob: Data) throws -> (offset: Int64, json: Data) {
        let footer = [UInt8](blob.suffix(EStargz.footerSize))
        let offset = try EStargz.tocOffset(footer: footer)
        let member = blob.subdata(in: Int(offset)..<(blob.count - EStargz.footerSize))
        return (offset, try EStargz.tocJSON(fromMember: member))
    }

    @Test func sameEntriesGiveTheSameBytesWhateverTheirOrder() throws {
        let dir = try TemporaryDirectory()
        let items = try entries(in: dir)
        let a = try write(items)
        let b = try write(items.reversed())
        #expect(a.blob == b.blob)
        #expect(a.written == b.written)
    }

    @Test func footerRoundTripsAndRejectsOtherBytes() throws {
        let footer = EStargz.footer(tocOffset: 0x1234_5678)
        #expect(footer.count == 51)
        #expect(try EStargz.tocOffset(footer: footer) == 0x1234_5678)
        var bad = footer
        bad[13] = UInt8(ascii: "X")
        #expect(throws: TarError.self) { try EStargz.tocOffset(footer: bad) }
        #expect(throws: TarError.self) { try EStargz.tocOffset(footer: Array(footer.dropLast())) }
    }

    @Test func tocPinsEveryFileAndItsMembersDecompressAlone() throws {
        let dir = try TemporaryDirectory()
        let layer = try write(try entries(in: dir))
        let (offset, json) = try toc(of: layer.blob)
        #expect(SHA256Hasher.digest(json) == layer.written.tocDigest)
        let index = try EStargz.index(layer: SHA256Hasher.digest(layer.blob), toc: json, tocOffset: offset)
        let files = Dictionary(uniqueKeysWithValues: index.entries.map { ($0.path, $0) })
        #expect(files["io.triton.cache/K/link"]?.kind == .symlink)
        #expect(files["io.triton.cache/K"]?.kind == .directory)
        let remote = try #require(index.remote)
        for name in ["a.cubin", "big.llir", "a.json", "__grp__a.json"] {
            let source =
                name.hasSuffix(".cubin") || name.hasSuffix(".llir")
                ? try Data(contentsOf: URL(fileURLWithPath: dir.path + "/src/" + name))
                : (name == "a.json" ? Data(#"{"target":{}}"#.utf8) : Data(#"{"child_paths":{}}"#.utf8))
            let entry = try #require(files["io.triton.cache/K/" + name])
            #expect(entry.content == SHA256Hasher.digest(source))
            var assembled = Data()
            for chunk in try #require(remote.chunks(of: entry.content!)) {
                let member = layer.blob.subdata(in: Int(chunk.offset)..<Int(chunk.offset + chunk.length))
                assembled += try EStargz.chunkBytes(member: member, size: chunk.size, digest: chunk.digest)
            }
            #expect(assembled == source, "\(name)")
        }
        #expect(remote.chunks(of: files["io.triton.cache/K/big.llir"]!.content!)?.count == 3)  // 10000 B in 4 KiB
        #expect(files["io.triton.cache/K/empty"]?.content == SHA256Hasher.digest(Data()))
    }

    @Test func metadataComesBeforeOtherFiles() throws {
        let dir = try TemporaryDirectory()
        let layer = try write(try entries(in: dir))
        let names = try layerEntryNames(layer.blob)
        // Nothing prioritized: the spec's no-prefetch landmark comes first.
        #expect(
            names.prefix(5) == [
                EStargz.noPrefetchLandmark, "io.triton.cache/", "io.triton.cache/K/",
                "io.triton.cache/K/__grp__a.json", "io.triton.cache/K/a.json",
            ])
        #expect(names.last == EStargz.tocName)
    }

    /// Three kernel directories, each with metadata and a binary.
    func kernels(_ keys: [String]) -> [LayerWriter.Entry] {
        [.directory("io.triton.cache"), .directory("io.triton.manifest")]
            + keys.flatMap { key -> [LayerWriter.Entry] in
                [
                    .directory("io.triton.cache/\(key)"),
                    LayerWriter.Entry(path: "io.triton.cache/\(key)/k.json", content: .bytes(Data("{\(key)}".utf8))),
                    LayerWriter.Entry(
                        path: "io.triton.cache/\(key)/k.cubin",
                        content: .bytes(Data(String(repeating: key, count: 500).utf8))),
                ]
            }
            + [LayerWriter.Entry(path: "io.triton.manifest/manifest.json", content: .bytes(Data("{}".utf8)))]
    }

    @Test func prioritizedEntriesComeFirstThenThePrefetchLandmark() throws {
        let dir = try TemporaryDirectory()
        var blob = Data()
        let written = try EStargzWriter.write(
            kernels(["A", "B", "C"]), prioritized: ["io.triton.cache/C", "io.triton.cache/Z", "io.triton.cache/A"],
            scratch: dir.path + "/scratch.tar"
        ) { blob.append(contentsOf: $0) }
        #expect(written.missedPrioritized == ["io.triton.cache/Z"])
        let names = try layerEntryNames(blob)
        #expect(
            names.prefix(8) == [
                "io.triton.cache/", "io.triton.cache/C/", "io.triton.cache/C/k.json", "io.triton.cache/C/k.cubin",
                "io.triton.cache/A/", "io.triton.cache/A/k.json", "io.triton.cache/A/k.cubin",
                EStargz.prefetchLandmark,
            ])
        #expect(names.dropFirst(8).first == "io.triton.cache/B/")
        #expect(!names.contains(EStargz.noPrefetchLandmark))
        #expect(names.filter { $0 == "io.triton.cache/" }.count == 1)

        // The index knows where the prioritized region ends: the hot files lie before it, the rest after.
        let (offset, json) = try toc(of: blob)
        let index = try EStargz.index(layer: SHA256Hasher.digest(blob), toc: json, tocOffset: offset)
        let end = try #require(index.remote?.prefetchEnd)
        #expect(!index.entries.contains { $0.path == EStargz.prefetchLandmark })
        for entry in index.entries where entry.kind == .file {
            let chunk = try #require(index.remote?.chunks(of: entry.content!)?.first)
            let hot = entry.path.hasPrefix("io.triton.cache/A/") || entry.path.hasPrefix("io.triton.cache/C/")
            #expect(hot == (chunk.offset < end), "\(entry.path) at \(chunk.offset), landmark at \(end)")
            // A hot member ends where the next begins, the landmark's included: the region holds it whole.
            if hot { #expect(chunk.offset + chunk.length <= end, "\(entry.path) runs past the landmark") }
        }
        // The landmark is the spec's: one byte 0x0f, in the TOC like any file.
        let toc = try JSONDecoder().decode(EStargz.TOC.self, from: json)
        let landmark = try #require(toc.entries.first { $0.name == EStargz.prefetchLandmark })
        #expect(landmark.offset == end)
        #expect(landmark.size == 1)
        #expect(landmark.digest == SHA256Hasher.digest(Data([0x0f])).description)
    }

    @Test func aLayerWithoutPrioritizedEntriesHasNoPrefetchRegion() throws {
        let dir = try TemporaryDirectory()
        var blob = Data()
        _ = try EStargzWriter.write(kernels(["A"]), scratch: dir.path + "/scratch.tar") { blob.append(contentsOf: $0) }
        let (offset, json) = try toc(of: blob)
        let index = try EStargz.index(layer: SHA256Hasher.digest(blob), toc: json, tocOffset: offset)
        #expect(index.remote?.prefetchEnd == nil)
        #expect(!index.entries.contains { $0.path == EStargz.noPrefetchLandmark })
    }

    @Test func hotSetsParseTheirTextFormAndRefuseEscapes() throws {
        let set = try HotSet(parsing: "# recorded by a mount\nKEY1\n\nKEY2/\nKEY1\ntorch_compile_cache/h/rank_0_0\n")
        #expect(set.names == ["KEY1", "KEY2", "torch_compile_cache/h/rank_0_0"])
        #expect(try HotSet(parsing: set.text) == set)
        #expect(throws: HotSet.ParseError.self) { try HotSet(parsing: "KEY\n../etc\n") }
        #expect(throws: HotSet.ParseError.self) { try HotSet(parsing: "/abs") }
        #expect(throws: HotSet.ParseError.self) { try HotSet(parsing: "a//b") }
    }

    /// An eStargz layer is an ordinary tar.gz: mcvfs's own unpacker (libarchive) reads it, diff_id included.
    @Test func libarchiveReadsItAsAnOrdinaryTarGz() throws {
        let dir = try TemporaryDirectory()
        let items = try entries(in: dir)
        let layer = try write(items)
        let blobPath = dir.path + "/layer.tar.gz"
        try layer.blob.write(to: URL(fileURLWithPath: blobPath))
        let store = try DirectoryBlobStore(root: dir.url.appendingPathComponent("store"))
        let index = try LayerUnpacker(store: store).index(layer: SHA256Hasher.digest(layer.blob), blobPath: blobPath)
        let lazy = try EStargz.index(
            layer: index.layer, toc: try toc(of: layer.blob).json, tocOffset: try toc(of: layer.blob).offset)
        let unpacked = Dictionary(uniqueKeysWithValues: index.entries.map { ($0.path, $0.content) })
        let pack = try LayerPack(index: index, file: MappedFile(path: try #require(store.packPath(for: index.layer))))
        for entry in lazy.entries where entry.kind == .file {
            #expect(unpacked[entry.path] == entry.content, "\(entry.path)")
            #expect(pack.data(of: entry.content!).map(SHA256Hasher.digest) == entry.content)
        }
        #expect(unpacked[EStargz.tocName] != nil)
        #expect(SHA256Hasher.digest(try EStargz.gunzipAll(layer.blob)) == layer.written.diffID)
    }

    @Test func aCorruptedMemberFailsVerification() throws {
        let dir = try TemporaryDirectory()
        let layer = try write(try entries(in: dir))
        let (offset, json) = try toc(of: layer.blob)
        let index = try EStargz.index(layer: SHA256Hasher.digest(layer.blob), toc: json, tocOffset: offset)
        let cubin = try #require(index.entries.first { $0.path.hasSuffix("a.cubin") }?.content)
        let chunk = try #require(index.remote?.chunks(of: cubin)?.first)
        var member = layer.blob.subdata(in: Int(chunk.offset)..<Int(chunk.offset + chunk.length))
        member[member.startIndex + 12] ^= 0x55
        #expect(throws: TarError.self) {
            try EStargz.chunkBytes(member: member, size: chunk.size, digest: chunk.digest)
        }
        // Bytes that decompress but differ from the TOC's digest fail too.
        #expect(throws: TarError.self) {
            try EStargz.chunkBytes(
                member: layer.blob.subdata(in: Int(chunk.offset)..<Int(chunk.offset + chunk.length)), size: chunk.size,
                digest: SHA256Hasher.digest(Data("other".utf8)))
        }
    }

    @Test func tocTimesParseWithoutAFormatter() {
        #expect(EStargz.parseTime("1970-01-01T00:00:00Z") == 0)
        #expect(EStargz.parseTime("2025-01-31T12:00:00Z") == 1_738_324_800)
        #expect(EStargz.parseTime("2024-02-29T23:59:59Z") == 1_709_251_199)
        #expect(EStargz.parseTime("2025-01-31T12:00:00+01:00") == nil)  // left to ISO8601DateFormatter
    }

    @Test func hostileTOCEntriesRefuseTheLayer() throws {
        func index(_ entries: [EStargz.Entry]) throws -> LayerIndex {
            let json = try JSONEncoder().encode(EStargz.TOC(entries: entries))
            return try EStargz.index(layer: SHA256Hasher.digest(json), toc: json, tocOffset: 1000)
        }
        var escape = EStargz.Entry(name: "../etc/passwd", type: "reg")
        escape.size = 0
        #expect(throws: TarError.self) { try index([escape]) }
        var link = EStargz.Entry(name: "a", type: "symlink")
        link.linkName = "/etc"
        #expect(throws: TarError.self) { try index([link]) }
        var suid = EStargz.Entry(name: "x", type: "reg")
        suid.mode = 0o4755
        suid.size = 0
        #expect(throws: TarError.self) { try index([suid]) }
        #expect(throws: TarError.self) { try index([EStargz.Entry(name: "dev", type: "char")]) }
        var noDigest = EStargz.Entry(name: "f", type: "reg")
        noDigest.size = 5
        noDigest.offset = 0
        #expect(throws: TarError.self) { try index([noDigest]) }
    }

    func layerEntryNames(_ blob: Data) throws -> [String] {
        tarEntries(try EStargz.gunzipAll(blob)).map(\.name)
    }
}

extension EStargz {
    /// Every member of a gzip stream, decompressed (test helper: `gzip -dc`).
    static func gunzipAll(_ data: Data) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["gzip", "-dc"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        let writer = Thread {
            input.fileHandleForWriting.write(data)
            try? input.fileHandleForWriting.close()
        }
        writer.start()
        let result = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return result
    }
}
