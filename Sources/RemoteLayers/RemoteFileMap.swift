import Dispatch
import LayerArchive
import OCI
import Synchronization

/// A file of a lazily indexed layer: where its gzip members lie, and the directory it is fetched with.
struct RemoteFile: Sendable, Hashable {
    var content: Digest
    var layer: Descriptor
    var chunks: [RemoteLayout.Chunk]
    var size: Int64
    /// `<layer hex>/<directory>`: the files fetched together.
    var group: String

    /// One member, small enough to be held in memory and fetched in a span with its neighbours. Larger files
    /// (several members) are streamed into the store member by member.
    var isSingleMember: Bool { chunks.count == 1 && chunks[0].length <= LayerBlobReader.maxSpan }

    /// The blob range of a single-member file.
    var region: LayerBlobReader.Region { LayerBlobReader.Region(offset: chunks[0].offset, length: chunks[0].length) }
}

/// Where each file content of the layers indexed from their TOC lies, and which contents share a directory.
///
/// Mapping every content of a large TOC takes tens of milliseconds, so a fresh index is registered in the
/// background, beside the tree build; lookups wait for registrations still running.
///
/// A content several layers hold (a kernel published by one image and merged into a compaction) is fetched from
/// the first layer registered, and from the others once that layer is gone from the registry: a mount that pinned
/// an image whose tag compaction removed keeps serving its files from the compaction's layer.
final class RemoteFileMap: Sendable {
    struct State {
        var files: [Digest: RemoteFile] = [:]
        /// Other layers holding a content, in the order they were registered.
        var alternates: [Digest: [RemoteFile]] = [:]
        var groups: [String: [Digest]] = [:]
        var registered: Set<Digest> = []
        /// Each layer's single-member files in offset order: what a range of the blob holds.
        var byOffset: [Digest: [RemoteFile]] = [:]
        /// Layers the registry no longer has: their contents come from an alternate.
        var gone: Set<Digest> = []

        /// Records the files of `index` (a layer indexed from its TOC); a layer registered before is left as it is,
        /// and a content another layer already placed is kept as an alternate.
        mutating func register(_ index: LayerIndex, layer: Descriptor) {
            guard let layout = index.remote, registered.insert(layer.digest).inserted else { return }
            let layerName = layer.digest.hex
            for entry in index.entries where entry.kind == .file {
                guard let content = entry.content else { continue }
                let directory = entry.path.lastIndex(of: "/").map { String(entry.path[..<$0]) } ?? ""
                let group = layerName + "/" + directory
                let file = RemoteFile(
                    content: content, layer: layer, chunks: layout.chunks(of: content) ?? [], size: entry.size,
                    group: group)
                groups[group, default: []].append(content)
                if file.isSingleMember { byOffset[layer.digest, default: []].append(file) }
                if files[content] == nil {
                    files[content] = file
                } else if files[content]?.layer.digest != layer.digest {
                    alternates[content, default: []].append(file)
                }
            }
            byOffset[layer.digest]?.sort { $0.chunks[0].offset < $1.chunks[0].offset }
        }

        /// The single-member files of `layer` whose member lies wholly inside `range`.
        func files(of layer: Digest, within range: Range<Int64>) -> [RemoteFile] {
            guard let sorted = byOffset[layer] else { return [] }
            var (low, high) = (0, sorted.count)
            while low < high {
                let middle = (low + high) / 2
                if sorted[middle].chunks[0].offset < range.lowerBound { low = middle + 1 } else { high = middle }
            }
            var found: [RemoteFile] = []
            for file in sorted[low...] {
                guard file.region.offset < range.upperBound else { break }
                if file.region.end <= range.upperBound { found.append(file) }
            }
            return found
        }

        /// Every single-member file of `layer`, in offset order.
        func files(of layer: Digest) -> [RemoteFile] { byOffset[layer] ?? [] }

        /// Where `content` can be fetched: layers still in the registry first, each in registration order.
        func locations(of content: Digest) -> [RemoteFile] {
            let all = (files[content].map { [$0] } ?? []) + (alternates[content] ?? [])
            return all.filter { !gone.contains($0.layer.digest) } + all.filter { gone.contains($0.layer.digest) }
        }

        /// The other single-member files of `file`'s directory, as that layer holds them.
        func siblings(of file: RemoteFile) -> [RemoteFile] {
            (groups[file.group] ?? []).compactMap { digest in
                guard digest != file.content,
                    let sibling = locations(of: digest).first(where: { $0.group == file.group }),
                    sibling.isSingleMember
                else { return nil }
                return sibling
            }
        }
    }

    private let state = Mutex(State())
    /// Registrations still running in the background.
    private let registrations = DispatchGroup()

    /// Registers `index` now.
    func register(_ index: LayerIndex, layer: Descriptor) {
        state.withLock { $0.register(index, layer: layer) }
    }

    /// Registers `index` on another thread; `file(_:)` and `files(_:)` wait for it.
    func registerInBackground(_ index: LayerIndex, layer: Descriptor) {
        registrations.enter()
        DispatchQueue.global(qos: .userInitiated).async { [self] in
            register(index, layer: layer)
            registrations.leave()
        }
    }

    func file(_ content: Digest) -> RemoteFile? { locations(of: content).first }

    /// Every layer that holds `content`, those still in the registry first.
    func locations(of content: Digest) -> [RemoteFile] {
        registrations.wait()
        return state.withLock { $0.locations(of: content) }
    }

    /// Records that the registry no longer has `layer` (its blob answered 404): its contents come from elsewhere.
    func markGone(_ layer: Digest) {
        state.withLock { _ = $0.gone.insert(layer) }
    }

    /// The files of `contents` that a registered layer names.
    func files(_ contents: [Digest]) -> [RemoteFile] {
        registrations.wait()
        return state.withLock { state in contents.compactMap { state.locations(of: $0).first } }
    }

    func siblings(of file: RemoteFile) -> [RemoteFile] {
        state.withLock { $0.siblings(of: file) }
    }

    /// The single-member files of `layer` lying wholly inside `range` (what a fetched span holds besides what was
    /// asked for).
    func files(of layer: Digest, within range: Range<Int64>) -> [RemoteFile] {
        registrations.wait()
        return state.withLock { $0.files(of: layer, within: range) }
    }

    /// Every single-member file of `layer`, in offset order.
    func files(of layer: Digest) -> [RemoteFile] {
        registrations.wait()
        return state.withLock { $0.files(of: layer) }
    }
}
