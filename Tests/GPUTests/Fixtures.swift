import Foundation
import Testing

/// Files under `Tests/GPUTests/Fixtures`, copied into the test bundle.
enum Fixtures {
    static func url(_ relative: String) throws -> URL {
        let root = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let url = root.appending(path: relative)
        #expect(FileManager.default.fileExists(atPath: url.path), "missing fixture \(relative)")
        return url
    }

    /// A recorded KFD topology (`kfd/<host>/nodes`), for `GPUDetector(kfdTopologyRoot:)`.
    static func kfdRoot(_ host: String) throws -> String {
        try url("kfd/\(host)/nodes").path
    }

    static func data(_ relative: String) throws -> Data {
        try Data(contentsOf: url(relative))
    }

    /// A temporary directory removed when `body` returns.
    static func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory.appending(path: "mcvfs-gpu-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }

    /// A topology directory holding one node per `(name, properties text)`.
    static func writeTopology(_ nodes: [(String, String)], in dir: URL) throws -> String {
        let root = dir.appending(path: "nodes")
        for (name, text) in nodes {
            let node = root.appending(path: name)
            try FileManager.default.createDirectory(at: node, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: node.appending(path: "properties"))
        }
        return root.path
    }
}

/// An NVML name that cannot exist, so detection sees "no NVIDIA driver" whatever the machine has.
let absentNVML = "/nonexistent/mcvfs-tests/libnvidia-ml.so.1"
