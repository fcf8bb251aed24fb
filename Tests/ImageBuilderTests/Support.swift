import Foundation
import Testing

/// The repository's fixture caches (`Tests/Fixtures`), found from this file's path.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    static let cuda90 = path("triton-3.9.0/cuda-90")
    static let cuda80 = path("triton-3.9.0/cuda-80")
    static let hip942 = path("triton-3.9.0/hip-gfx942")
    static let mcvCuda = path("mcv-examples/vector-add-cache")
    static let mcvRocm = path("mcv-examples/vector-add-cache-rocm")
    static let vllm = path("mcv-examples/vllm-cache")
}

/// A temporary directory, removed when the value is deinitialised.
final class TemporaryDirectory {
    let url: URL
    var path: String { url.path }

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("mcvfs-builder-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    /// Copies a fixture directory's entries into `sub` (created), returning its path.
    @discardableResult
    func copy(_ source: String, to sub: String) throws -> String {
        let destination = url.appendingPathComponent(sub)
        try FileManager.default.createDirectory(at: destination, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: source) {
            try FileManager.default.copyItem(
                atPath: source + "/" + name, toPath: destination.appendingPathComponent(name).path)
        }
        return destination.path
    }

    func write(_ text: String, to relative: String) throws {
        let file = url.appendingPathComponent(relative)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: file)
    }
}

/// Names and sizes of a plain (uncompressed) tar's entries, in archive order; pax extended headers are skipped.
func tarEntries(_ data: Data) -> [(name: String, type: UInt8, size: Int)] {
    var entries: [(String, UInt8, Int)] = []
    let bytes = [UInt8](data)
    var offset = 0
    var paxPath: String?
    while offset + 512 <= bytes.count {
        let header = bytes[offset..<offset + 512]
        if header.allSatisfy({ $0 == 0 }) { break }
        func field(_ start: Int, _ length: Int) -> String {
            let raw = header[(offset + start)..<(offset + start + length)].prefix { $0 != 0 }
            return String(decoding: raw, as: UTF8.self)
        }
        let size = Int(field(124, 12).trimmingCharacters(in: .whitespaces), radix: 8) ?? 0
        let type = bytes[offset + 156]
        let body = offset + 512
        if type == UInt8(ascii: "x") {
            let text = String(decoding: bytes[body..<body + size], as: UTF8.self)
            for record in text.split(separator: "\n") where record.contains(" path=") {
                paxPath = String(record.split(separator: "=", maxSplits: 1)[1])
            }
        } else {
            let prefix = field(345, 155)
            let name = paxPath ?? (prefix.isEmpty ? field(0, 100) : prefix + "/" + field(0, 100))
            entries.append((name, type, size))
            paxPath = nil
        }
        offset = body + (size + 511) / 512 * 512
    }
    return entries
}
