import ContentHash
import Foundation
import OCI

/// Writes eStargz layers (see `EStargz`) reproducibly, from the same entries and tar headers as `LayerWriter`.
///
/// Entry order (stargz-snapshotter `docs/estargz.md`, "Prioritized Files and Landmark Files"): the prioritized
/// entries, each with its parents first and in the order given, then the landmark `.prefetch.landmark`; or, with
/// nothing prioritized, the landmark `.no.prefetch.landmark` first. Then the rest: directories, the small files a
/// mount reads while building its tree (kernel metadata `*.json` and `__grp__*` group files), everything else, each
/// group in byte-wise path order. A mount fetches the prioritized region (up to the landmark's member) with one
/// range request, and the metadata run with another; tar readers do not care about order beyond parents first.
public enum EStargzWriter {
    public struct Written: Sendable, Hashable {
        /// sha256 of the TOC JSON: the value of the `toc.digest` annotation.
        public var tocDigest: Digest
        /// sha256 of the uncompressed layer (the config's `diff_id`).
        public var diffID: Digest
        public var uncompressedSize: Int64
        /// Prioritized paths that named no entry (left out of the prioritized region).
        public var missedPrioritized: [String] = []
    }

    /// Writes `entries` as an eStargz layer into `sink`.
    /// - Parameters:
    ///   - prioritized: layer paths (files or directories, with everything below them) to put first, in order.
    ///   - scratch: a path for the intermediate tar (created, then removed).
    ///   - chunkSize: files larger than this are split into members of this many uncompressed bytes.
    /// - Throws: `TarError`, or what `sink` throws.
    public static func write(
        _ entries: [LayerWriter.Entry], prioritized: [String] = [], scratch: String,
        chunkSize: Int64 = EStargz.defaultChunkSize, level: Int = LayerWriter.gzipLevel,
        to sink: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) throws -> Written {
        precondition(chunkSize > 0, "chunk size must be positive")
        let (ordered, missed) = order(entries, prioritized: prioritized)
        let fd = open(scratch, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TarError.store(.io(operation: "create", path: scratch, errno: errno)) }
        defer {
            close(fd)
            unlink(scratch)
        }
        try LayerWriter.writeTar(inOrder: ordered) { chunk in
            var done = 0
            while done < chunk.count {
                let n = Glibc.write(fd, chunk.baseAddress! + done, chunk.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw TarError.store(.io(operation: "write", path: scratch, errno: errno))
                }
                done += n
            }
        }
        let (items, end) = try TarLayout.scan(fd: fd, path: scratch)
        guard items.count == ordered.count else {
            throw TarError.corrupt(path: scratch, reason: "\(items.count) tar entries for \(ordered.count) inputs")
        }

        final class Hashing: @unchecked Sendable {
            var hasher: SHA256Hasher? = SHA256Hasher()
            var size: Int64 = 0
        }
        let uncompressed = Hashing()
        let gzip = GzipMemberWriter(level: level, sink: sink)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        var position: Int64 = 0
        /// Copies tar bytes `position..<upTo` into the current member, feeding `also` (a chunk's hashers).
        func copy(upTo limit: Int64, also: ((UnsafeRawBufferPointer) -> Void)? = nil) throws {
            while position < limit {
                let want = Int(min(Int64(buffer.count), limit - position))
                let n = pread(fd, buffer.baseAddress, want, off_t(position))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw TarError.store(.io(operation: "read", path: scratch, errno: errno))
                }
                if n == 0 { throw TarError.corrupt(path: scratch, reason: "tar shorter than its headers say") }
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[..<n])
                uncompressed.hasher!.update(bytes)
                uncompressed.size += Int64(n)
                also?(bytes)
                try gzip.write(bytes)
                position += Int64(n)
            }
        }

        var toc: [EStargz.Entry] = []
        for (entry, item) in zip(ordered, items) {
            var record = EStargz.Entry(name: entry.path, type: "reg")
            record.modtime = "1970-01-01T00:00:00Z"
            record.mode = Int64(entry.mode)
            switch entry.content {
            case .directory:
                record.name += "/"
                record.type = "dir"
                toc.append(record)
            case .symlink(let target):
                record.type = "symlink"
                record.linkName = target
                toc.append(record)
            case .file, .bytes:
                record.size = item.size
                try copy(upTo: item.dataStart)
                if item.size == 0 {
                    record.digest = SHA256Hasher.digest(Data()).description
                    toc.append(record)
                    continue
                }
                let fileHasher = HasherBox()
                var chunks: [EStargz.Entry] = []
                var chunkStart: Int64 = 0
                while chunkStart < item.size {
                    let length = min(chunkSize, item.size - chunkStart)
                    // Each chunk starts a member, so it can be fetched and decompressed on its own.
                    try gzip.closeMember()
                    var chunk = chunks.isEmpty ? record : EStargz.Entry(name: entry.path, type: "chunk")
                    chunk.offset = gzip.offset
                    chunk.chunkOffset = chunkStart
                    let chunkHasher = HasherBox()
                    try copy(upTo: item.dataStart + chunkStart + length) { bytes in
                        chunkHasher.update(bytes)
                        fileHasher.update(bytes)
                    }
                    chunk.chunkDigest = chunkHasher.finalize().description
                    if item.size > chunkSize { chunk.chunkSize = length }
                    chunks.append(chunk)
                    chunkStart += length
                }
                chunks[0].digest = fileHasher.finalize().description
                toc += chunks
            }
        }
        try copy(upTo: end)
        try gzip.closeMember()

        let tocOffset = gzip.offset
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = try encoder.encode(EStargz.TOC(entries: toc))
        var tocTar = Data()
        try LayerWriter.writeTar(inOrder: [LayerWriter.Entry(path: EStargz.tocName, content: .bytes(json))]) {
            tocTar.append(contentsOf: $0)
        }
        try tocTar.withUnsafeBytes { bytes in
            uncompressed.hasher!.update(bytes)
            uncompressed.size += Int64(bytes.count)
            try gzip.write(bytes)
        }
        try gzip.closeMember()
        try gzip.writeRaw(EStargz.footer(tocOffset: tocOffset))
        let hasher = uncompressed.hasher.take()!
        return Written(
            tocDigest: SHA256Hasher.digest(json), diffID: hasher.finalize(), uncompressedSize: uncompressed.size,
            missedPrioritized: missed)
    }

    /// The landmark entries: regular files holding the byte 0x0f, as the spec has them.
    static func landmark(_ name: String) -> LayerWriter.Entry {
        LayerWriter.Entry(path: name, content: .bytes(Data([EStargz.landmarkContents])))
    }

    /// The prioritized entries (parents first, then each prioritized path's subtree in `order`), the landmark,
    /// then the rest in `order`; with nothing prioritized, the no-prefetch landmark, then everything in `order`.
    /// - Returns: the entries to write and the prioritized paths that matched none.
    static func order(
        _ entries: [LayerWriter.Entry], prioritized: [String]
    ) -> (entries: [LayerWriter.Entry], missed: [String]) {
        guard !prioritized.isEmpty else { return ([landmark(EStargz.noPrefetchLandmark)] + order(entries), []) }
        // Every entry under each of its ancestors (and itself), so a subtree is one lookup.
        var under: [String: [Int]] = [:]
        for (i, entry) in entries.enumerated() {
            var path = Substring(entry.path)
            while true {
                under[String(path), default: []].append(i)
                guard let slash = path.lastIndex(of: "/") else { break }
                path = path[..<slash]
            }
        }
        let byPath = Dictionary(entries.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
        var picked = Set<String>()
        var head: [LayerWriter.Entry] = []
        var missed: [String] = []
        for path in prioritized {
            guard let members = under[path] else {
                missed.append(path)
                continue
            }
            var parents: [LayerWriter.Entry] = []
            var parent = Substring(path)
            while let slash = parent.lastIndex(of: "/") {
                parent = parent[..<slash]
                if let entry = byPath[String(parent)] { parents.append(entry) }
            }
            let subtree = order(members.map { entries[$0] })
            for entry in parents.reversed() + subtree where picked.insert(entry.path).inserted {
                head.append(entry)
            }
        }
        let rest = order(entries.filter { !picked.contains($0.path) })
        return (head + [landmark(EStargz.prefetchLandmark)] + rest, missed)
    }

    /// Directories, then tree-building metadata, then the rest; byte-wise path order within each.
    static func order(_ entries: [LayerWriter.Entry]) -> [LayerWriter.Entry] {
        func rank(_ entry: LayerWriter.Entry) -> Int {
            switch entry.content {
            case .directory: return 0
            case .file, .bytes: return isTreeMetadata(entry.path) ? 1 : 2
            case .symlink: return 2
            }
        }
        return entries.map { (rank($0), Array($0.path.utf8), $0) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1.lexicographicallyPrecedes($1.1) }
            .map(\.2)
    }

    /// Files a mount reads while building its tree: kernel metadata and group files.
    public static func isTreeMetadata(_ path: String) -> Bool {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return name.hasPrefix("__grp__") || name.hasSuffix(".json")
    }
}

/// A hasher a closure can update (the hasher itself is noncopyable).
private final class HasherBox {
    private var hasher: SHA256Hasher? = SHA256Hasher()
    func update(_ bytes: UnsafeRawBufferPointer) { hasher!.update(bytes) }
    func finalize() -> Digest { hasher.take()!.finalize() }
}
