import BlobCache
import ContentHash
import Foundation
import LayerArchive
import OCI
import TestSupport
import Testing

/// A layer unpacked while its bytes arrive (`LayerStream`), against the same layer unpacked from a file: the same
/// index, the same pack, the same refusals; and nothing left behind when it fails.
@Suite struct LayerStreamTests {
    let base: LayerIndexingTests

    init() throws { base = try LayerIndexingTests() }

    var store: DirectoryBlobStore { base.store }

    /// Streams the file at `path` in chunks of varying size, as a download delivers it.
    func stream(_ path: String, layer: Digest, chunk: Int = 10_007) throws -> UnpackedLayer {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let stream = try LayerUnpacker(store: store).stream(layer: layer, mediaType: MediaType.ociLayerGzip)
        var offset = 0
        var step = 1  // the first chunks are tiny: the format is told from two bytes
        while offset < data.count {
            let end = min(data.count, offset + step)
            data[offset..<end].withUnsafeBytes { stream.write($0) }
            offset = end
            step = step < chunk ? step * 3 : chunk
        }
        return try stream.finish()
    }

    /// Temp files in `ingest/` (a pack being written, or one a failure left behind).
    var ingestTemps: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: store.root.path + "/ingest")) ?? [])
            .filter { $0.hasSuffix(".tmp") }
    }

    @Test(arguments: LayerIndexingTests.Compression.allCases) func aStreamedLayerIndexesAsTheSameLayerFromAFile(
        _ compression: LayerIndexingTests.Compression
    ) throws {
        let path = try base.fixtureLayer(compression)
        let layer = SHA256Hasher.digest(try Data(contentsOf: URL(fileURLWithPath: path)))
        let streamed = try stream(path, layer: layer)
        #expect(store.packPath(for: layer) == nil)  // not committed yet, and readable already
        #expect(ingestTemps.count == 1)
        let early = try LayerPack(index: streamed.index, file: streamed.pack.map())

        let fromFile = try LayerUnpacker(store: try DirectoryBlobStore(root: base.dir.url.appendingPathComponent("b")))
            .index(layer: layer, blobPath: path)
        #expect(streamed.index == fromFile)
        for (relative, bytes) in try regularFiles(below: Fixtures.cuda90) {
            let entry = try #require(streamed.index.entries.first { $0.path == "io.triton.cache/" + relative })
            #expect(early.data(of: try #require(entry.content)) == bytes, "\(relative)")
        }

        let committed = try streamed.pack.commit()
        #expect(store.packPath(for: layer) == committed)
        #expect(ingestTemps.isEmpty)
        #expect(early.data(of: streamed.index.entries.first { $0.kind == .file }!.content!) != nil)  // still mapped
        try base.cache.save(streamed.index)
        #expect(base.cache.isComplete(try #require(base.cache.load(layer: layer))))
    }

    /// eStargz is many gzip members back to back; a whole-layer read goes through all of them.
    @Test func aMultiMemberGzipStreamIsReadToItsEnd() throws {
        let dir = try TemporaryDirectory()
        let entries = try EStargzTests().entries(in: dir, big: 50_000)
        var blob = Data()
        _ = try EStargzWriter.write(entries, scratch: dir.path + "/s.tar", chunkSize: 4096) {
            blob.append(contentsOf: $0)
        }
        try blob.write(to: URL(fileURLWithPath: dir.path + "/layer.tar.gz"))
        let layer = SHA256Hasher.digest(blob)
        let unpacked = try stream(dir.path + "/layer.tar.gz", layer: layer, chunk: 333)
        let pack = try LayerPack(index: unpacked.index, file: unpacked.pack.map())
        let big = try #require(unpacked.index.entries.first { $0.path == "io.triton.cache/K/big.llir" })
        #expect(big.size == 50_000 / 16 * 16)
        #expect(pack.data(of: big.content!).map(SHA256Hasher.digest) == big.content)
        #expect(unpacked.index.entries.contains { $0.path == EStargz.tocName })
    }

    @Test func identicalFilesAreStoredOnce() throws {
        let tar = base.dir.file("twins.tar")
        let text = String(repeating: "same bytes ", count: 30_000)
        try makeTar([.file("a", text), .file("b", text), .file("c", "other")], at: tar)
        let unpacked = try stream(tar, layer: SHA256Hasher.digest(Data("twins".utf8)))
        #expect(unpacked.index.pack?.size == Int64(text.utf8.count + 5))
        #expect(unpacked.index.entries[0].content == unpacked.index.entries[1].content)
    }

    @Test(arguments: LayerIndexingTests.hostileCases) func hostileEntriesRefuseTheStreamedLayer(
        _ hostile: LayerIndexingTests.HostileCase
    ) throws {
        let tar = base.dir.file("hostile.tar.gz")
        try makeTar(
            [.dir("io.triton.cache"), .file("io.triton.cache/ok.json", "{}")] + hostile.members, at: tar, gzip: true,
            gnu: hostile.gnu)
        let error = #expect(throws: TarError.self) { try stream(tar, layer: SHA256Hasher.digest(Data(tar.utf8))) }
        guard case .hostileEntry(let path, let reason)? = error else {
            Issue.record("expected hostileEntry, got \(String(describing: error))")
            return
        }
        #expect(path.hasPrefix(hostile.entry), "reported '\(path)': \(reason)")
        #expect(ingestTemps.isEmpty)
    }

    @Test func corruptOrTruncatedGzipFailsAndLeavesNothing() throws {
        let big = base.dir.file("big.bin")
        try Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) })
            .write(to: URL(fileURLWithPath: big))
        let tar = base.dir.file("t.tar.gz")
        try makeTar([.file("small", "x"), TarMember(name: "big.bin", type: .file, src: big)], at: tar, gzip: true)
        let full = try Data(contentsOf: URL(fileURLWithPath: tar))
        var flipped = full
        flipped[full.count / 2] ^= 0x55
        var noTrailer = full
        noTrailer.removeLast(4)  // the length field of the trailer: the CRC passes, the stream does not end
        for (name, bytes) in [
            ("flipped", flipped), ("cut in half", full.prefix(full.count / 2)), ("no trailer", noTrailer),
        ] {
            let path = base.dir.file("\(name).tar.gz")
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: TarError.self, "\(name)") {
                try stream(path, layer: SHA256Hasher.digest(Data(bytes)))
            }
            switch error {
            case .corrupt?, .archive?: break
            default: Issue.record("\(name): expected a corruption error, got \(String(describing: error))")
            }
            #expect(ingestTemps.isEmpty, "\(name)")
        }
    }

    @Test func aCancelledStreamStopsAndRemovesItsPack() throws {
        let path = try base.fixtureLayer(.gzip)
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let stream = try LayerUnpacker(store: store).stream(layer: SHA256Hasher.digest(data))
        data.prefix(data.count / 2).withUnsafeBytes { stream.write($0) }
        #expect(ingestTemps.count == 1)
        stream.cancel()
        #expect(ingestTemps.isEmpty)
        #expect(throws: (any Error).self) { try stream.finish() }
    }

    @Test func anUnfinishedStreamDroppedMidwayIsCancelled() throws {
        let path = try base.fixtureLayer(.none)
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        do {
            let stream = try LayerUnpacker(store: store).stream(layer: SHA256Hasher.digest(data))
            data.prefix(100_000).withUnsafeBytes { stream.write($0) }
        }
        #expect(ingestTemps.isEmpty)
    }

    @Test func nonTarMediaTypesAreRefusedBeforeAnyByte() throws {
        #expect(throws: TarError.self) {
            try LayerUnpacker(store: store).stream(
                layer: SHA256Hasher.digest(Data()), mediaType: MediaType.cosignSimpleSigning)
        }
    }
}
