import BlobCache
import Dispatch
import Foundation
import LayerArchive
import OCI
import Synchronization

/// The packs a fetcher serves whole layers from: each unpacked layer's contents, mapped once and read in place.
///
/// A layer unpacked while it downloaded is served from its pack as soon as the layer's digest verified, before the
/// pack is durable: `commitInBackground` commits the layer blob and the pack, then persists the index (in that
/// order, so no persisted index ever names a pack that is not there), off the path of the first reads. A pack committed by an
/// earlier process is mapped when its persisted index is loaded (`open`).
///
/// The state is a map from layer and content digests to packs, never held across I/O.
final class PackedLayers: Sendable {
    struct State {
        var packs: [Digest: LayerPack] = [:]
        /// Which pack holds each content (the first registered, when several do).
        var holders: [Digest: Digest] = [:]
        /// Indexes of the layers this process unpacked whole (persisted in the background).
        var unpacked: [Digest: LayerIndex] = [:]

        /// Serves `pack`, in place of an earlier pack of its layer (a prefetch that wrote more of it).
        mutating func register(_ pack: LayerPack) {
            packs[pack.layer] = pack
            for content in pack.contents where holders[content] == nil { holders[content] = pack.layer }
        }

        func pack(holding content: Digest) -> LayerPack? { holders[content].flatMap { packs[$0] } }
    }

    private let state = Mutex(State())
    private let store: DirectoryBlobStore
    /// Background commits not finished yet (`waitForCommits`).
    private let commits = DispatchGroup()

    init(store: DirectoryBlobStore) { self.store = store }

    /// The pack holding `content`, when a registered layer has it.
    func pack(holding content: Digest) -> LayerPack? { state.withLock { $0.pack(holding: content) } }

    func isRegistered(_ layer: Digest) -> Bool { state.withLock { $0.packs[layer] != nil } }

    /// The pack served for `layer`, if any.
    func pack(of layer: Digest) -> LayerPack? { state.withLock { $0.packs[layer] } }

    /// Serves `pack` from now on; `unpacked` is the index of a layer unpacked whole here, kept for the fetcher
    /// until the persisted one is there.
    func register(_ pack: LayerPack, unpacked: LayerIndex? = nil) {
        state.withLock { state in
            state.register(pack)
            if let unpacked { state.unpacked[unpacked.layer] = unpacked }
        }
    }

    /// The index of `layer` when this process unpacked it whole.
    func unpacked(_ layer: Digest) -> LayerIndex? { state.withLock { $0.unpacked[layer] } }

    /// Maps the committed pack of a persisted packed `index` and serves it; false when the pack is gone or does not
    /// hold what the index says (then the layer must be unpacked again).
    func open(_ index: LayerIndex) -> Bool {
        if isRegistered(index.layer) { return true }
        guard let path = store.packPath(for: index.layer), let file = try? MappedFile(path: path),
            let pack = try? LayerPack(index: index, file: file)
        else { return false }
        try? store.touch(index.layer)  // its use, for least-recently-used eviction
        register(pack)
        return true
    }

    /// `commit`, on a background queue; `failed` hears of an error (what was not committed is dropped, and a later
    /// mount unpacks the layer again).
    func commitInBackground(
        _ layer: LayerDownloader.Downloaded, into indexes: LayerIndexCache,
        failed: @escaping @Sendable (any Error) -> Void
    ) {
        commits.enter()
        DispatchQueue.global(qos: .utility).async { [commits] in
            defer { commits.leave() }
            do { try Self.commit(layer, into: indexes) } catch { failed(error) }
        }
    }

    /// Makes the layer blob and then the pack durable, then persists the index.
    static func commit(_ layer: LayerDownloader.Downloaded, into indexes: LayerIndexCache) throws {
        do {
            _ = try layer.blob.commit()
            _ = try layer.unpacked.pack.commit()
        } catch {
            layer.blob.abort()
            layer.unpacked.pack.abort()
            throw error
        }
        try indexes.save(layer.unpacked.index)
    }

    /// Waits until every background commit has ended.
    func waitForCommits() { commits.wait() }
}
