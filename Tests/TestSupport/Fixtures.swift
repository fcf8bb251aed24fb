import Foundation

/// The repository's fixture caches (`Tests/Fixtures`), found from this file's path.
public enum Fixtures {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    public static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// Real Triton 3.9.0 caches compiled at a foreign path (`/opt/build/...`).
    public static let cuda90 = path("triton-3.9.0/cuda-90")
    public static let cuda80 = path("triton-3.9.0/cuda-80")
    public static let hip942 = path("triton-3.9.0/hip-gfx942")
    /// Model Cache Vault's own example caches.
    public static let mcvCuda = path("mcv-examples/vector-add-cache")
    public static let mcvRocm = path("mcv-examples/vector-add-cache-rocm")
    public static let vllm = path("mcv-examples/vllm-cache")
    /// The one kernel directory of `mcvCuda`.
    public static let mcvCudaKey = "5W7KJQDTJCL4UGPMKKCS7TEEPZKSWOY4774SZQ6674FWSXG5MNXQ"
}

/// Files below `root`, relative path to bytes.
public func regularFiles(below root: String) throws -> [String: Data] {
    var result: [String: Data] = [:]
    let enumerator = FileManager.default.enumerator(atPath: root)!
    while let relative = enumerator.nextObject() as? String {
        var isDirectory: ObjCBool = false
        let full = root + "/" + relative
        if FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue {
            result[relative] = try Data(contentsOf: URL(fileURLWithPath: full))
        }
    }
    return result
}
