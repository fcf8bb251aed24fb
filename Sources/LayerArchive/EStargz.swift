import CArchive
import ContentHash
import Foundation
import OCI

/// The eStargz layer format (containerd/stargz-snapshotter `docs/estargz.md`): a tar.gz whose every regular file
/// (or each chunk of a large file) starts its own gzip member, followed by a member holding the tar entry
/// `stargz.index.json` (the TOC: every entry with the compressed offset of its member and the sha256 of its
/// bytes), then a 51-byte footer member whose gzip extra field gives the TOC's offset. Any tar.gz reader sees an
/// ordinary archive with one extra file; a reader that knows the format fetches the footer, the TOC, and then
/// only the members it needs. The layer descriptor's `containerd.io/snapshot/stargz/toc.digest` annotation pins
/// the TOC, which pins every file.
public enum EStargz {
    public static let tocDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest"
    /// Size of the uncompressed layer, recorded by the ecosystem's writers for readers that preallocate.
    public static let uncompressedSizeAnnotation = "io.containers.estargz.uncompressed-size"
    public static let tocName = "stargz.index.json"
    /// Marks the end of the prioritized entries, which a reader prefetches with one request.
    public static let prefetchLandmark = ".prefetch.landmark"
    /// Says that no entry is prioritized.
    public static let noPrefetchLandmark = ".no.prefetch.landmark"
    /// What either landmark file holds (one byte).
    public static let landmarkContents: UInt8 = 0x0f
    public static let footerSize = 51
    /// Files larger than this are split into chunks, each its own gzip member and TOC entry.
    public static let defaultChunkSize: Int64 = 4 << 20
    /// A TOC this large (compressed or not) is refused: a million-entry layer stays far below it.
    public static let maxTOCSize: Int64 = 256 << 20

    /// The TOC document (`stargz.index.json`).
    public struct TOC: Codable, Sendable, Hashable {
        public var version: Int
        public var entries: [Entry]

        public init(version: Int = 1, entries: [Entry]) {
            self.version = version
            self.entries = entries
        }
    }

    /// One TOC entry; field names are the spec's. A regular file's first chunk is described on its `reg` entry,
    /// further chunks by `chunk` entries of the same name.
    public struct Entry: Codable, Sendable, Hashable {
        public var name: String
        /// `dir`, `reg`, `symlink`, `hardlink`, `chunk` (also `char`, `block`, `fifo`, which mcvfs refuses).
        public var type: String
        public var size: Int64?
        public var modtime: String?
        public var linkName: String?
        public var mode: Int64?
        public var uid: Int?
        public var gid: Int?
        /// Offset in the compressed blob of the gzip member that starts with this chunk's bytes.
        public var offset: Int64?
        public var chunkOffset: Int64?
        /// 0 or absent: the chunk runs to the end of the file.
        public var chunkSize: Int64?
        public var chunkDigest: String?
        /// sha256 of the whole file (on `reg` entries).
        public var digest: String?

        public init(name: String, type: String) {
            self.name = name
            self.type = type
        }
    }

    /// The footer: an empty gzip member whose extra field (subfield `SG`) holds `%016x` of the TOC offset and
    /// `STARGZ`. The bytes are fixed so any writer's footer parses the same way.
    public static func footer(tocOffset: Int64) -> [UInt8] {
        var bytes: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff]  // gzip, deflate, FEXTRA, no mtime
        bytes += [26, 0]  // XLEN
        bytes += [UInt8(ascii: "S"), UInt8(ascii: "G"), 22, 0]
        bytes += Array(String(format: "%016llx", UInt64(tocOffset)).utf8) + Array("STARGZ".utf8)
        bytes += [0x01, 0x00, 0x00, 0xff, 0xff]  // final stored block of length 0
        bytes += [0, 0, 0, 0, 0, 0, 0, 0]  // CRC32 and size of nothing
        return bytes
    }

    /// The TOC offset a footer names.
    /// - Throws: `TarError.corrupt` when `bytes` is not an eStargz footer.
    public static func tocOffset(footer bytes: [UInt8]) throws(TarError) -> Int64 {
        func bad(_ reason: String) -> TarError { .corrupt(path: nil, reason: "eStargz footer: \(reason)") }
        guard bytes.count == footerSize else { throw bad("\(bytes.count) bytes, not \(footerSize)") }
        guard bytes[0] == 0x1f, bytes[1] == 0x8b, bytes[2] == 8, bytes[3] & 0x04 != 0 else {
            throw bad("not a gzip header with an extra field")
        }
        guard bytes[10] == 26, bytes[11] == 0, bytes[12] == UInt8(ascii: "S"), bytes[13] == UInt8(ascii: "G"),
            bytes[14] == 22, bytes[15] == 0
        else { throw bad("no SG subfield") }
        let payload = String(decoding: bytes[16..<38], as: UTF8.self)
        guard payload.hasSuffix("STARGZ"), let offset = Int64(payload.prefix(16), radix: 16), offset >= 0 else {
            throw bad("malformed TOC offset '\(payload)'")
        }
        return offset
    }

    /// Decodes the TOC member (from the TOC offset up to the footer): one gzip member holding the tar entry
    /// `stargz.index.json`. Returns the JSON bytes, whose sha256 the annotation pins.
    /// - Throws: `TarError.corrupt` for anything else.
    public static func tocJSON(fromMember member: Data) throws(TarError) -> Data {
        let tar = try gunzip(member, limit: maxTOCSize + 4096)
        guard tar.count >= 512 else { throw TarError.corrupt(path: tocName, reason: "TOC member too short") }
        let header = [UInt8](tar.prefix(512))
        let name = String(decoding: header[0..<100].prefix { $0 != 0 }, as: UTF8.self)
        guard name == tocName || name == "./" + tocName else {
            throw TarError.corrupt(path: tocName, reason: "TOC member holds '\(name)'")
        }
        guard let size = TarLayout.octal(header[124..<136]), size <= Int64(tar.count - 512) else {
            throw TarError.corrupt(path: tocName, reason: "TOC size field out of range")
        }
        return tar.subdata(in: 512..<(512 + Int(size)))
    }

    /// Decompresses the first gzip member of `data`, at most `limit` bytes of output (a bound on bombs).
    /// - Throws: `TarError.corrupt` for a damaged member (a bad CRC included) or one ending early.
    public static func gunzip(_ data: Data, limit: Int64) throws(TarError) -> Data {
        var output = Data()
        try inflateMember(data, limit: limit) { output.append(contentsOf: $0) }
        return output
    }

    /// Streams the decompressed bytes of the gzip member at the start of `data` into `sink`, stopping after
    /// `limit` bytes (the rest of the member is then not checked: callers verify the bytes by digest).
    static func inflateMember(
        _ data: Data, limit: Int64, stopAtLimit: Bool = false, _ sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws(TarError) {
        var stream = z_stream()
        guard mcvfs_inflate_init_gzip(&stream) == Z_OK else {
            throw TarError.archive(operation: "inflateInit2", message: "zlib init failed", errno: ENOMEM)
        }
        defer { inflateEnd(&stream) }
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { output.deallocate() }
        var produced: Int64 = 0
        var failure: (any Error)?
        data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
            stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(input.count)
            while true {
                stream.next_out = output.bindMemory(to: Bytef.self).baseAddress
                stream.avail_out = uInt(output.count)
                let code = inflate(&stream, Z_NO_FLUSH)
                let n = output.count - Int(stream.avail_out)
                if n > 0 {
                    let keep = Int(min(Int64(n), limit - produced))
                    if keep < n && !stopAtLimit {
                        failure = TarError.limitExceeded(path: nil, reason: "gzip member expands past \(limit) bytes")
                        return
                    }
                    do { try sink(UnsafeRawBufferPointer(rebasing: output[..<keep])) } catch {
                        failure = error
                        return
                    }
                    produced += Int64(keep)
                    if stopAtLimit && produced == limit { return }
                }
                if code == Z_STREAM_END { return }
                if code == Z_BUF_ERROR && stream.avail_in == 0 {
                    failure = TarError.corrupt(path: nil, reason: "gzip member cut short after \(produced) bytes")
                    return
                }
                if code != Z_OK && code != Z_BUF_ERROR {
                    let message = stream.msg.map { String(cString: $0) } ?? "error \(code)"
                    failure = TarError.corrupt(path: nil, reason: "gzip member: \(message)")
                    return
                }
            }
        }
        if let failure {
            if let failure = failure as? TarError { throw failure }
            throw TarError.corrupt(path: nil, reason: String(describing: failure))
        }
    }

    /// The first `size` bytes of the gzip member starting `data`, checked against `digest` when given.
    /// - Throws: `TarError.corrupt` when the member is damaged, short, or the bytes do not match.
    public static func chunkBytes(member data: Data, size: Int64, digest: Digest?) throws(TarError) -> Data {
        var bytes = Data()
        bytes.reserveCapacity(Int(min(size, defaultChunkSize)))  // `size` is the TOC's claim: grow as bytes come
        try inflateMember(data, limit: size, stopAtLimit: true) { bytes.append(contentsOf: $0) }
        guard Int64(bytes.count) == size else {
            throw TarError.corrupt(path: nil, reason: "chunk holds \(bytes.count) of \(size) bytes")
        }
        if let digest {
            let actual = SHA256Hasher.digest(bytes)
            guard actual == digest else {
                throw TarError.corrupt(path: nil, reason: "chunk digest \(actual) does not match the TOC's \(digest)")
            }
        }
        return bytes
    }
}

/// Compresses into one gzip member at a time; members concatenated form one valid gzip stream (RFC 1952 §2.2).
/// Deterministic: zlib's gzip header carries no time and no name.
final class GzipMemberWriter {
    private var stream = z_stream()
    private var open = false
    private let level: Int32
    private let sink: (UnsafeRawBufferPointer) throws -> Void
    private let output = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
    /// Compressed bytes written so far, over all members.
    private(set) var offset: Int64 = 0

    init(level: Int, sink: @escaping (UnsafeRawBufferPointer) throws -> Void) {
        self.level = Int32(level)
        self.sink = sink
    }

    deinit {
        if open { deflateEnd(&stream) }
        output.deallocate()
    }

    /// Ends the current member, if one is open; the next write starts a new one at `offset`.
    func closeMember() throws {
        guard open else { return }
        try run(UnsafeRawBufferPointer(start: nil, count: 0), flush: Z_FINISH)
        deflateEnd(&stream)
        open = false
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        if !open {
            stream = z_stream()
            guard mcvfs_deflate_init_gzip(&stream, level) == Z_OK else {
                throw TarError.archive(operation: "deflateInit2", message: "zlib init failed", errno: ENOMEM)
            }
            open = true
        }
        if bytes.isEmpty { return }
        try run(bytes, flush: Z_NO_FLUSH)
    }

    /// Appends bytes as they are (the footer, already a complete member).
    func writeRaw(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try sink($0) }
        offset += Int64(bytes.count)
    }

    private func run(_ input: UnsafeRawBufferPointer, flush: Int32) throws {
        stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
        stream.avail_in = uInt(input.count)
        while true {
            stream.next_out = output.bindMemory(to: Bytef.self).baseAddress
            stream.avail_out = uInt(output.count)
            let code = deflate(&stream, flush)
            guard code == Z_OK || code == Z_STREAM_END || code == Z_BUF_ERROR else {
                throw TarError.archive(operation: "deflate", message: "zlib error \(code)", errno: 0)
            }
            let n = output.count - Int(stream.avail_out)
            if n > 0 {
                try sink(UnsafeRawBufferPointer(rebasing: output[..<n]))
                offset += Int64(n)
            }
            if flush == Z_FINISH ? code == Z_STREAM_END : (stream.avail_in == 0 && stream.avail_out != 0) { return }
        }
    }
}

/// Reads the block layout of a tar stream that `LayerWriter` wrote: where each entry's header and data lie.
enum TarLayout {
    struct Item {
        /// Offset of the entry's first header block (its pax extended header, when it has one).
        var headerStart: Int64
        var dataStart: Int64
        var size: Int64
        var typeflag: UInt8
    }

    /// The entries in archive order, and the offset of the end-of-archive blocks.
    static func scan(fd: Int32, path: String) throws(TarError) -> (items: [Item], end: Int64) {
        var items: [Item] = []
        var position: Int64 = 0
        var pendingStart: Int64?
        var block = [UInt8](repeating: 0, count: 512)
        while true {
            let n = block.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 512, off_t(position)) }
            guard n == 512 else {
                throw TarError.corrupt(path: path, reason: "tar ends inside a header at \(position)")
            }
            if block.allSatisfy({ $0 == 0 }) { return (items, position) }
            guard let size = octal(block[124..<136]) else {
                throw TarError.corrupt(path: path, reason: "unreadable size field at \(position)")
            }
            let typeflag = block[156]
            let next = position + 512 + (size + 511) / 512 * 512
            // pax ('x', 'g') and GNU long-name ('L', 'K') headers describe the entry that follows.
            if [UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K")].contains(typeflag) {
                if pendingStart == nil { pendingStart = position }
            } else {
                items.append(
                    Item(
                        headerStart: pendingStart ?? position, dataStart: position + 512, size: size,
                        typeflag: typeflag))
                pendingStart = nil
            }
            position = next
        }
    }

    /// An octal tar number field (NUL- or space-terminated); nil when not octal.
    static func octal(_ field: ArraySlice<UInt8>) -> Int64? {
        let text = String(decoding: field.prefix { $0 != 0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        if text.isEmpty { return 0 }
        return Int64(text, radix: 8)
    }
}
