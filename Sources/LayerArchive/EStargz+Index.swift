import ContentHash
import Foundation
import OCI

extension EStargz {
    /// Indexes a layer from its TOC alone, applying the same `EntryPolicy` as `LayerUnpacker` (a hostile entry
    /// refuses the whole layer). File contents are named by the TOC's `digest`, their bytes located by
    /// `remote`; nothing is stored.
    /// - Parameters:
    ///   - json: the TOC bytes, already checked against the layer's `toc.digest` annotation.
    ///   - tocOffset: where the TOC member starts in the blob (the end of the last file member).
    ///   - tocDigest: the TOC's digest when the caller has computed it already.
    /// - Throws: `TarError`.
    public static func index(
        layer: Digest, toc json: Data, tocOffset: Int64, tocDigest: Digest? = nil,
        limits: LayerUnpacker.Limits = .init()
    ) throws(TarError) -> LayerIndex {
        let toc: TOC
        do { toc = try TOCReader.read(json) } catch {
            throw TarError.corrupt(path: tocName, reason: "TOC is not valid JSON: \(error)")
        }
        guard toc.version == 1 else { throw TarError.corrupt(path: tocName, reason: "TOC version \(toc.version)") }
        guard toc.entries.count <= limits.maxEntries else {
            throw TarError.limitExceeded(path: nil, reason: "more than \(limits.maxEntries) entries")
        }
        var order: [String] = []
        var entries: [String: TarEntry] = [:]
        var chunks:
            [Digest: (size: Int64, list: [(offset: Int64, chunkOffset: Int64, size: Int64?, digest: Digest?)])] =
                [:]
        var total: Int64 = 0
        var lastFile: (name: String, content: Digest, size: Int64)?
        var prefetchEnd: Int64?
        var landmarks: [Int64] = []
        func record(_ key: String, _ entry: TarEntry) {
            if entries.updateValue(entry, forKey: key) == nil { order.append(key) }
        }
        let epoch = ISO8601DateFormatter()

        for item in toc.entries {
            func hostile(_ reason: String) -> TarError { .hostileEntry(path: item.name, reason: reason) }
            func digest(_ text: String?, _ what: String) throws(TarError) -> Digest? {
                guard let text else { return nil }
                do { return try Digest(parsing: text) } catch {
                    throw TarError.corrupt(path: item.name, reason: "bad \(what) '\(text)'")
                }
            }
            let path: String
            do { path = try EntryPolicy.normalise(item.name) } catch { throw hostile("\(error)") }
            if path == tocName { continue }
            if path == prefetchLandmark || path == noPrefetchLandmark {
                // Not files of the cache, but members of the blob: the member before one ends where it starts.
                if item.type == "reg", let offset = item.offset, offset >= 0, offset < tocOffset {
                    landmarks.append(offset)
                    // Everything before the prefetch landmark's member is the prioritized region (one request).
                    if path == prefetchLandmark { prefetchEnd = offset }
                }
                continue
            }
            let mode = UInt32(truncatingIfNeeded: item.mode ?? 0o644)
            if mode & 0o6000 != 0 { throw hostile("setuid or setgid bit set (mode \(String(mode, radix: 8)))") }
            let mtime =
                item.modtime.map { text in
                    Self.parseTime(text) ?? epoch.date(from: text).map { Int64($0.timeIntervalSince1970) } ?? 0
                } ?? 0
            switch item.type {
            case "dir":
                if path.isEmpty { continue }
                record(path, TarEntry(path: path, kind: .directory, mode: mode & 0o1777, mtime: mtime))
            case "reg":
                guard !path.isEmpty else { throw hostile("file at the layer root") }
                let whiteout: EntryPolicy.Whiteout
                do { whiteout = try EntryPolicy.whiteout(path) } catch { throw hostile("\(error)") }
                switch whiteout {
                case .whiteout(let deleting):
                    record("\u{0}wh:" + deleting, TarEntry(path: deleting, kind: .whiteout, mode: mode, mtime: mtime))
                    continue
                case .opaque(let directory):
                    record(
                        "\u{0}opq:" + directory,
                        TarEntry(path: directory, kind: .opaqueWhiteout, mode: mode, mtime: mtime))
                    continue
                case .none: break
                }
                let size = item.size ?? 0
                guard size >= 0 else { throw TarError.corrupt(path: item.name, reason: "negative size") }
                if size > limits.maxEntrySize {
                    throw TarError.limitExceeded(
                        path: item.name, reason: "\(size) bytes (limit \(limits.maxEntrySize))")
                }
                total += size
                if total > limits.maxTotalSize {
                    throw TarError.limitExceeded(
                        path: item.name, reason: "layer expands past \(limits.maxTotalSize) bytes")
                }
                let content: Digest
                if let given = try digest(item.digest, "digest") {
                    content = given
                } else if size == 0 {
                    content = SHA256Hasher.digest(Data())
                } else {
                    throw TarError.corrupt(path: item.name, reason: "file without a digest in the TOC")
                }
                if size > 0 {
                    guard let offset = item.offset, offset >= 0, offset < tocOffset else {
                        throw TarError.corrupt(path: item.name, reason: "file without a valid offset in the TOC")
                    }
                    if chunks[content] == nil {
                        let chunkSize = item.chunkSize.flatMap { $0 > 0 ? $0 : nil }
                        let chunkDigest = try digest(item.chunkDigest, "chunkDigest")
                        chunks[content] = (size, [(offset, item.chunkOffset ?? 0, chunkSize, chunkDigest)])
                    }
                }
                lastFile = (path, content, size)
                record(
                    path,
                    TarEntry(path: path, kind: .file, mode: mode & 0o1777, size: size, mtime: mtime, content: content))
            case "chunk":
                guard let last = lastFile, last.name == path else {
                    throw TarError.corrupt(path: item.name, reason: "chunk entry not after its file")
                }
                guard let offset = item.offset, offset >= 0, offset < tocOffset, let chunkOffset = item.chunkOffset,
                    chunkOffset > 0, chunkOffset < last.size
                else { throw TarError.corrupt(path: item.name, reason: "chunk without a valid offset") }
                if chunks[last.content]?.list.contains(where: { $0.chunkOffset == chunkOffset }) == false {
                    let chunkSize = item.chunkSize.flatMap { $0 > 0 ? $0 : nil }
                    let chunkDigest = try digest(item.chunkDigest, "chunkDigest")
                    chunks[last.content]?.list.append((offset, chunkOffset, chunkSize, chunkDigest))
                }
            case "symlink":
                guard !path.isEmpty else { throw hostile("symlink at the layer root") }
                guard let target = item.linkName, !target.isEmpty else { throw hostile("symlink without a target") }
                if target.hasPrefix("/") { throw hostile("symlink target '\(target)' is absolute") }
                record(path, TarEntry(path: path, kind: .symlink, mode: 0o777, linkTarget: target, mtime: mtime))
            case "hardlink":
                let target: String
                do { target = try EntryPolicy.normalise(item.linkName ?? "") } catch {
                    throw hostile("hard link outside the layer: \(error)")
                }
                guard !path.isEmpty, let earlier = entries[target], earlier.kind == .file || earlier.kind == .hardlink
                else { throw hostile("hard link to '\(item.linkName ?? "")', which is no earlier file of the layer") }
                let original = earlier.kind == .hardlink ? earlier.linkTarget : target
                record(
                    path,
                    TarEntry(
                        path: path, kind: .hardlink, mode: earlier.mode, size: earlier.size, linkTarget: original,
                        mtime: mtime, content: earlier.content))
            case "char": throw hostile("character device node")
            case "block": throw hostile("block device node")
            case "fifo": throw hostile("FIFO node")
            default: throw hostile("unsupported TOC entry type '\(item.type)'")
            }
        }

        var tree: [String: TarEntry] = [:]
        var whiteouts: [TarEntry] = []
        for (key, entry) in entries {
            if key.hasPrefix("\u{0}") { whiteouts.append(entry) } else { tree[key] = entry }
        }
        if let (path, violation) = EntryPolicy.validateTree(tree, whiteouts: whiteouts) {
            throw TarError.hostileEntry(path: path, reason: "\(violation)")
        }

        // A member runs from its offset to the next member's (or the TOC's): that is the range to fetch.
        var starts = chunks.values.flatMap { $0.list.map(\.offset) }
        starts.append(tocOffset)
        starts += landmarks
        starts.sort()
        // The first member start after `offset` (every chunk's offset is in `starts`, and the TOC's is last).
        func memberEnd(_ offset: Int64) -> Int64 {
            var (low, high) = (0, starts.count)
            while low < high {
                let middle = (low + high) / 2
                if starts[middle] <= offset { low = middle + 1 } else { high = middle }
            }
            return starts[low]
        }
        var layout: [Digest: [RemoteLayout.Chunk]] = [:]
        layout.reserveCapacity(chunks.count)
        for (content, (size, list)) in chunks {
            let sorted = list.sorted { $0.chunkOffset < $1.chunkOffset }
            var result: [RemoteLayout.Chunk] = []
            var expected: Int64 = 0
            for (i, chunk) in sorted.enumerated() {
                guard chunk.chunkOffset == expected else {
                    throw TarError.corrupt(path: nil, reason: "chunks of \(content) leave a gap at \(expected)")
                }
                let end = i + 1 < sorted.count ? sorted[i + 1].chunkOffset : size
                let length = chunk.size ?? (end - chunk.chunkOffset)
                guard length > 0, chunk.chunkOffset + length == end else {
                    throw TarError.corrupt(path: nil, reason: "chunk sizes of \(content) do not add up")
                }
                result.append(
                    RemoteLayout.Chunk(
                        offset: chunk.offset, length: memberEnd(chunk.offset) - chunk.offset,
                        chunkOffset: chunk.chunkOffset, size: length, digest: chunk.digest))
                expected = end
            }
            layout[content] = result
        }
        return LayerIndex(
            layer: layer, entries: order.map { entries[$0]! },
            remote: RemoteLayout(
                tocDigest: tocDigest ?? SHA256Hasher.digest(json), chunks: layout, prefetchEnd: prefetchEnd))
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` (what writers emit) without a date formatter, which costs more than the rest of
    /// indexing an entry; nil for any other form.
    public static func parseTime(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        guard b.count == 20, b[4] == 45, b[7] == 45, b[10] == 84, b[13] == 58, b[16] == 58, b[19] == 90 else {
            return nil
        }
        func number(_ range: Range<Int>) -> Int64? {
            var value: Int64 = 0
            for c in b[range] {
                guard c >= 48, c <= 57 else { return nil }
                value = value * 10 + Int64(c - 48)
            }
            return value
        }
        guard let y = number(0..<4), let m = number(5..<7), let d = number(8..<10), let hh = number(11..<13),
            let mm = number(14..<16), let ss = number(17..<19), (1...12).contains(m), (1...31).contains(d)
        else { return nil }
        // Days from the civil date (Howard Hinnant's algorithm).
        let yy = m <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        return days * 86400 + hh * 3600 + mm * 60 + ss
    }
}
