import ContentHash
import Foundation
import LayerArchive
import OCI

/// An eStargz layer built in memory by the project's own writer (the layout `mcvfs push` gives): its blob, the
/// descriptor a manifest would carry (with the `toc.digest` annotation) and its TOC, to serve from a
/// `InMemoryRegistry` and to locate members in.
public struct EStargzLayer: Sendable {
    public let blob: Data
    public let descriptor: Descriptor
    public let toc: EStargz.TOC
    public let tocOffset: Int64
    /// The regular files by path, as written.
    public let files: [String: Data]

    /// - Parameter files: path → bytes; parent directories are added.
    public init(files: [String: Data], chunkSize: Int64 = EStargz.defaultChunkSize) throws {
        var directories = Set<String>()
        for path in files.keys {
            var parent = (path as NSString).deletingLastPathComponent
            while !parent.isEmpty {
                directories.insert(parent)
                parent = (parent as NSString).deletingLastPathComponent
            }
        }
        let entries =
            directories.map { LayerWriter.Entry.directory($0) }
            + files.map { LayerWriter.Entry(path: $0.key, content: .bytes($0.value)) }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("estargz-\(UUID().uuidString)").path
        var blob = Data()
        let written = try EStargzWriter.write(entries, scratch: scratch, chunkSize: chunkSize) {
            blob.append(contentsOf: $0)
        }
        let footer = [UInt8](blob.suffix(EStargz.footerSize))
        tocOffset = try EStargz.tocOffset(footer: footer)
        let member = blob.subdata(in: Int(tocOffset)..<(blob.count - EStargz.footerSize))
        toc = try JSONDecoder().decode(EStargz.TOC.self, from: try EStargz.tocJSON(fromMember: member))
        self.blob = blob
        self.files = files
        descriptor = Descriptor(
            mediaType: MediaType.ociLayerGzip, digest: SHA256Hasher.digest(blob), size: Int64(blob.count),
            annotations: [EStargz.tocDigestAnnotation: written.tocDigest.description])
    }

    /// The content digest of the file at `path`.
    public func content(of path: String) -> Digest { SHA256Hasher.digest(files[path]!) }

    /// The TOC's `reg` entry of `path`.
    public func entry(_ path: String) -> EStargz.Entry {
        toc.entries.first { $0.type == "reg" && $0.name == path }!
    }

    /// The gzip members holding `path`'s bytes (each runs to the next member, or to the TOC).
    public func members(of path: String) -> [Range<Int64>] {
        let starts = Set(toc.entries.compactMap(\.offset)).union([tocOffset]).sorted()
        return toc.entries.filter { ($0.type == "reg" || $0.type == "chunk") && $0.name == path && $0.offset != nil }
            .map { entry in entry.offset!..<starts.first { $0 > entry.offset! }! }
    }
}
