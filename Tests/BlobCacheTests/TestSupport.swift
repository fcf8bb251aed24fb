import Foundation
import OCI
import Synchronization
import Testing
import Verification

/// A fresh directory under the system temp dir, removed when released.
final class TemporaryDirectory: Sendable {
    let url: URL
    var path: String { url.path }

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("mcvfs-store-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func file(_ name: String) -> String { url.appendingPathComponent(name).path }
}

/// A counter threads can bump.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() { value.withLock { $0 += 1 } }
    var count: Int { value.withLock { $0 } }
}

/// Output of a finished helper process.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion (`/usr/bin/env` finds it on PATH).
@discardableResult
func run(_ arguments: [String], stdin: Data? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try input.fileHandleForWriting.close()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProcessResult(
        status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

/// Runs a command and requires success.
@discardableResult
func runChecked(_ arguments: [String], stdin: Data? = nil) throws -> ProcessResult {
    let result = try run(arguments, stdin: stdin)
    #expect(result.status == 0, "\(arguments.joined(separator: " ")) failed: \(result.stderr)")
    return result
}

/// The real Triton 3.9.0 cache for cuda:90 checked into the repository.
let fixtureCache = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/triton-3.9.0/cuda-90").path

func sha256(_ data: Data) -> Digest { SHA256Hasher.digest(data) }

/// Files below `root`, relative path to bytes.
func regularFiles(below root: String) throws -> [String: Data] {
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

/// One member of a tar a test builds with Python's `tarfile` (so hostile members can be made as well).
struct TarMember: Encodable {
    enum Kind: String, Encodable { case file, dir, symlink, hardlink, chr, fifo }
    var name: String
    var type: Kind
    var text: String?
    var src: String?
    var link: String?
    var mode: Int?

    static func file(_ name: String, _ text: String = "data", mode: Int = 0o644) -> TarMember {
        TarMember(name: name, type: .file, text: text, mode: mode)
    }
    static func dir(_ name: String) -> TarMember { TarMember(name: name, type: .dir) }
    static func symlink(_ name: String, to target: String) -> TarMember {
        TarMember(name: name, type: .symlink, link: target)
    }
    static func hardlink(_ name: String, to target: String) -> TarMember {
        TarMember(name: name, type: .hardlink, link: target)
    }
}

private let tarBuilder = #"""
    import io, json, sys, tarfile
    spec = json.load(sys.stdin)
    fmt = tarfile.GNU_FORMAT if spec.get("gnu") else tarfile.PAX_FORMAT
    with tarfile.open(spec["out"], "w:gz" if spec.get("gzip") else "w", format=fmt,
                      encoding="utf-8", errors="surrogateescape") as tf:
        for e in spec["entries"]:
            ti = tarfile.TarInfo(e["name"].replace("<FF>", "\udcff"))  # <FF>: a raw 0xff byte, invalid UTF-8
            ti.mtime = 1700000000
            t = e["type"]
            ti.mode = e.get("mode") or (0o755 if t == "dir" else 0o644)
            data = None
            if t == "file":
                data = open(e["src"], "rb").read() if e.get("src") else (e.get("text") or "").encode()
                ti.size = len(data)
            elif t == "dir": ti.type = tarfile.DIRTYPE
            elif t == "symlink": ti.type = tarfile.SYMTYPE; ti.linkname = e["link"]
            elif t == "hardlink": ti.type = tarfile.LNKTYPE; ti.linkname = e["link"]
            elif t == "chr": ti.type = tarfile.CHRTYPE; ti.devmajor = 1; ti.devminor = 3
            elif t == "fifo": ti.type = tarfile.FIFOTYPE
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    """#

/// Writes a tar (optionally gzip-compressed) holding `members`, exactly as given: no sanitising.
func makeTar(_ members: [TarMember], at path: String, gzip: Bool = false, gnu: Bool = false) throws {
    struct Spec: Encodable {
        var out: String
        var gzip: Bool
        var gnu: Bool
        var entries: [TarMember]
    }
    let spec = try JSONEncoder().encode(Spec(out: path, gzip: gzip, gnu: gnu, entries: members))
    try runChecked(["python3", "-c", tarBuilder], stdin: spec)
}
