import BlobCache
import ContentHash
import Foundation
import LayerArchive
import OCI
import TestSupport
import Testing

@Suite struct LayerWriterTests {
    func tar(_ entries: [LayerWriter.Entry]) throws -> Data {
        var data = Data()
        try LayerWriter.writeTar(entries) { data.append(contentsOf: $0) }
        return data
    }

    func compressed(_ tar: Data, _ compression: LayerWriter.Compression) throws -> Data {
        let dir = try TemporaryDirectory()
        let file = dir.url.appendingPathComponent("layer.tar")
        try tar.write(to: file)
        var out = Data()
        try LayerWriter.compress(file: file.path, as: compression) { out.append(contentsOf: $0) }
        return out
    }

    @Test func sameEntriesGiveTheSameBytesWhateverTheirOrder() throws {
        let dir = try TemporaryDirectory()
        try dir.write("kernel", to: "src/a.cubin")
        let entries: [LayerWriter.Entry] = [
            .directory("io.triton.cache"),
            LayerWriter.Entry(path: "io.triton.cache/K/b.json", content: .bytes(Data("{}".utf8))),
            .directory("io.triton.cache/K"),
            LayerWriter.Entry(
                path: "io.triton.cache/K/a.cubin", content: .file(sourcePath: dir.path + "/src/a.cubin", size: 6)),
        ]
        let first = try tar(entries)
        let second = try tar(entries.reversed())
        #expect(first == second)
        #expect(
            tarEntries(first).map(\.name) == [
                "io.triton.cache/", "io.triton.cache/K/", "io.triton.cache/K/a.cubin", "io.triton.cache/K/b.json",
            ])
        for compression in LayerWriter.Compression.allCases {
            #expect(try compressed(first, compression) == compressed(second, compression), "\(compression)")
        }
    }

    @Test func entriesAreOwnedByRootAtTheEpochWithNormalisedModes() throws {
        let data = try tar([
            .directory("d"), LayerWriter.Entry(path: "d/x", content: .bytes(Data("x".utf8)), executable: true),
            LayerWriter.Entry(path: "d/y", content: .bytes(Data("y".utf8))),
        ])
        let bytes = [UInt8](data)
        // Header blocks: d/ at 0, d/x at 512, its data at 1024 ... (one data block each for x and y).
        func octal(_ offset: Int, _ length: Int) -> Int? {
            let text = String(decoding: bytes[offset..<offset + length].prefix { $0 != 0 }, as: UTF8.self)
            return Int(text.trimmingCharacters(in: .whitespaces), radix: 8)
        }
        let headers = [0, 512, 1536].map { offset in
            (
                mode: octal(offset + 100, 8), uid: octal(offset + 108, 8), mtime: octal(offset + 136, 12),
                uname: String(decoding: bytes[(offset + 265)..<(offset + 297)].prefix { $0 != 0 }, as: UTF8.self)
            )
        }
        #expect(headers.map(\.mode) == [0o755, 0o755, 0o644])
        #expect(headers.allSatisfy { $0.uid == 0 && $0.mtime == 0 && $0.uname.isEmpty })
    }

    @Test func gzipHeaderCarriesNoTimeAndNoName() throws {
        let gz = try compressed(try tar([.directory("d")]), .gzip)
        let header = [UInt8](gz.prefix(10))
        #expect(header[0] == 0x1f && header[1] == 0x8b)
        #expect(header[3] == 0, "no FNAME/FEXTRA/FCOMMENT flags")
        #expect(header[4..<8].allSatisfy { $0 == 0 }, "MTIME must be zero")
    }

    @Test func duplicatePathsAreRefused() throws {
        #expect(throws: TarError.self) {
            try tar([.directory("a"), .directory("a")])
        }
    }

    @Test func aFileThatChangedSizeFailsTheWrite() throws {
        let dir = try TemporaryDirectory()
        try dir.write("12345", to: "f")
        #expect(throws: TarError.self) {
            try tar([LayerWriter.Entry(path: "f", content: .file(sourcePath: dir.path + "/f", size: 3))])
        }
    }
}
