import Foundation

/// One member of a tar a test builds with Python's `tarfile` (so hostile members can be made as well).
public struct TarMember: Encodable, Sendable {
    public enum Kind: String, Encodable, Sendable { case file, dir, symlink, hardlink, chr, fifo }
    public var name: String
    public var type: Kind
    public var text: String?
    public var src: String?
    public var link: String?
    public var mode: Int?

    public init(
        name: String, type: Kind, text: String? = nil, src: String? = nil, link: String? = nil, mode: Int? = nil
    ) {
        self.name = name
        self.type = type
        self.text = text
        self.src = src
        self.link = link
        self.mode = mode
    }

    public static func file(_ name: String, _ text: String = "data", mode: Int = 0o644) -> TarMember {
        TarMember(name: name, type: .file, text: text, mode: mode)
    }
    public static func dir(_ name: String) -> TarMember { TarMember(name: name, type: .dir) }
    public static func symlink(_ name: String, to target: String) -> TarMember {
        TarMember(name: name, type: .symlink, link: target)
    }
    public static func hardlink(_ name: String, to target: String) -> TarMember {
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
public func makeTar(_ members: [TarMember], at path: String, gzip: Bool = false, gnu: Bool = false) throws {
    struct Spec: Encodable {
        var out: String
        var gzip: Bool
        var gnu: Bool
        var entries: [TarMember]
    }
    let spec = try JSONEncoder().encode(Spec(out: path, gzip: gzip, gnu: gnu, entries: members))
    try runChecked(["python3", "-c", tarBuilder], stdin: spec)
}

/// Names and sizes of a plain (uncompressed) tar's entries, in archive order; pax extended headers are skipped.
public func tarEntries(_ data: Data) -> [(name: String, type: UInt8, size: Int)] {
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
