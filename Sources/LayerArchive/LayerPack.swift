import BlobCache
import Foundation
import OCI

/// The contents of a packed layer, readable in place: its pack mapped, each content located by the index. Regions
/// handed out stay valid while this value (or the mapping) is held. A layer unpacked whole has every content in its
/// pack; an eStargz layer has those its background prefetch wrote there (the others are fetched by range).
public final class LayerPack: Sendable {
    public let layer: Digest
    public let file: MappedFile
    /// Where the index put each content (what a pack grown further starts from).
    public let layout: PackLayout
    private let regions: [Digest: (offset: Int64, size: Int64)]

    /// - Throws: `TarError.corrupt` when the index is not a packed one, or names bytes the pack does not have (a
    ///   pack cut short, by a full disk say), or lacks a content of a layer unpacked whole.
    public init(index: LayerIndex, file: MappedFile) throws(TarError) {
        guard let layout = index.pack else {
            throw TarError.corrupt(path: nil, reason: "layer \(index.layer.short) is not packed")
        }
        guard layout.size == Int64(file.bytes.count) else {
            throw TarError.corrupt(
                path: file.path, reason: "pack holds \(file.bytes.count) bytes, its index says \(layout.size)")
        }
        var regions: [Digest: (offset: Int64, size: Int64)] = [:]
        for entry in index.entries where entry.kind == .file {
            guard let content = entry.content, regions[content] == nil else { continue }
            if layout.offsets[content] == nil && index.remote != nil { continue }  // not prefetched (yet)
            guard let offset = layout.offsets[content], file.region(offset: offset, length: entry.size) != nil else {
                throw TarError.corrupt(path: entry.path, reason: "not in the pack of layer \(index.layer.short)")
            }
            regions[content] = (offset, entry.size)
        }
        self.layer = index.layer
        self.file = file
        self.layout = layout
        self.regions = regions
    }

    /// Every content the pack holds.
    public var contents: Dictionary<Digest, (offset: Int64, size: Int64)>.Keys { regions.keys }

    /// The bytes of `content`, in place.
    public func region(of content: Digest) -> UnsafeRawBufferPointer? {
        regions[content].flatMap { file.region(offset: $0.offset, length: $0.size) }
    }

    /// A copy of the bytes of `content`.
    public func data(of content: Digest) -> Data? {
        region(of: content).map { Data($0) }
    }
}
