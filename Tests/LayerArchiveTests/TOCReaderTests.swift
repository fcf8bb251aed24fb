import Foundation
import TestSupport
import Testing

@testable import LayerArchive

/// The TOC reader must accept exactly what a JSON decode of `EStargz.TOC` accepts, with the same result.
@Suite struct TOCReaderTests {
    func foundation(_ text: String) throws -> EStargz.TOC {
        try JSONDecoder().decode(EStargz.TOC.self, from: Data(text.utf8))
    }

    func reader(_ text: String) throws -> EStargz.TOC {
        try TOCReader.read(Data(text.utf8))
    }

    @Test func readsWhatTheWriterWritesLikeFoundation() throws {
        var entries: [EStargz.Entry] = []
        for i in 0..<50 {
            var file = EStargz.Entry(name: "io.triton.cache/KEY\(i)/k.cubin", type: "reg")
            file.size = Int64(i * 1000)
            file.modtime = "2024-01-02T03:04:05Z"
            file.mode = 0o644
            file.uid = 0
            file.gid = 0
            file.offset = Int64(i * 4096)
            file.digest = "sha256:" + String(repeating: "ab", count: 32)
            file.chunkDigest = file.digest
            file.chunkSize = 0
            entries.append(EStargz.Entry(name: "io.triton.cache/KEY\(i)/", type: "dir"))
            entries.append(file)
        }
        var link = EStargz.Entry(name: "a/link", type: "symlink")
        link.linkName = "../b"
        entries.append(link)
        let encoded = try JSONEncoder().encode(EStargz.TOC(entries: entries))
        let text = String(decoding: encoded, as: UTF8.self)
        #expect(try reader(text) == (try foundation(text)))
        #expect(try reader(text).entries.count == 101)
    }

    @Test func escapesWhitespaceNullsAndUnknownMembersReadLikeFoundation() throws {
        let text = """
            {
              "prefetch": {"list": [1, 2.5e3, -0.25, true, false, null, {"x": ["y"]}]},
              "version" : 1,
              "entries": [
                {"name": "caf\\u00e9/\\ud83d\\ude00 \\"q\\" \\\\ \\/ \\t", "type": "reg", "size": 0, "devMajor": 0,
                 "xattrs": {"user.a": "b"}, "digest": null, "NumLink": 1},
                {"type":"dir","name":"d/"}
              ]
            }
            """
        let read = try reader(text)
        #expect(read == (try foundation(text)))
        #expect(read.entries[0].name == "café/😀 \"q\" \\ / \t")
        #expect(read.entries[0].digest == nil)
    }

    @Test(arguments: [
        "", "{", "[]", "{\"version\":1}", "{\"entries\":[]}", "{\"version\":1,\"entries\":[]} x",
        "{\"version\":1,\"entries\":[{\"type\":\"reg\"}]}",
        "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":1.5}]}",
        "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":\"1\"}]}",
        "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":01}]}",
        "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":99999999999999999999}]}",
        "{\"version\":1,\"entries\":[{\"name\":\"\\ud800\",\"type\":\"reg\"}]}",
        "{\"version\":1,\"entries\":[{\"name\":\"\\x\",\"type\":\"reg\"}]}",
        "{\"version\":1,\"entries\":[{\"name\":\"a\tb\",\"type\":\"reg\"}]}",
        "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"x\":tru}]}",
    ])
    func refusesWhatFoundationRefuses(text: String) {
        #expect(throws: (any Error).self) { try foundation(text) }
        #expect(throws: TOCReader.Failure.self) { try reader(text) }
    }

    /// Foundation's decoder lets these through (a trailing comma; a malformed member it never decodes); the TOC
    /// pins a layer's every byte, so the reader holds it to the JSON grammar.
    @Test(arguments: [
        "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\"},]}",
        "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"x\":-}]}",
    ])
    func refusesMalformedJSONFoundationToleratesInMembersItSkips(text: String) {
        #expect(throws: TOCReader.Failure.self) { try reader(text) }
    }

    @Test func refusesInvalidUTF8AndDeepNesting() {
        var bytes = Array("{\"version\":1,\"entries\":[{\"name\":\"".utf8)
        bytes += [0xff, 0xfe]
        bytes += Array("\",\"type\":\"reg\"}]}".utf8)
        #expect(throws: TOCReader.Failure.self) { try TOCReader.read(Data(bytes)) }
        let deep =
            "{\"version\":1,\"x\":" + String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
            + ",\"entries\":[]}"
        #expect(throws: TOCReader.Failure.self) { try reader(deep) }
    }
}
