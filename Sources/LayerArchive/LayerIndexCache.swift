import BlobCache
import Foundation
import OCI

/// Layer indexes persisted next to the blob store, at `<root>/index/sha256/<layer hex>.json`, so a layer is read
/// once per machine: later mounts load the index without touching (or even having) the layer blob.
///
/// An index is written only after the whole layer passed `EntryPolicy`, atomically (temp, `fsync`, `rename`);
/// a hostile or corrupt layer leaves no index behind. Builds of one layer are serialised across processes by
/// `index/sha256/<hex>.lock`, so concurrent mounts unpack it once.
///
/// Lock order: a caller may hold the layer blob's ingest lock (`BlobStore.withIngestLock`) when calling `build`,
/// which then takes the index lock; `build` itself takes no ingest lock (file contents use plain `ingest`), so the
/// reverse order never occurs. `flock` is not reentrant: do not call `build` for a layer from inside its own build.
public final class LayerIndexCache: Sendable {
    /// Bumped when the JSON shape changes; an index of another version is rebuilt.
    public static let formatVersion = 1

    public let unpacker: LayerUnpacker
    public var store: any BlobStore { unpacker.store }
    let layout: CacheLayout

    private struct Persisted: Codable {
        var formatVersion: Int
        var index: LayerIndex
    }

    /// - Parameters:
    ///   - layout: the cache directory (indexes live in `layout.indexes`).
    ///   - store: where file contents go.
    /// - Throws: `TarError.store` when `index/sha256` cannot be created.
    public init(layout: CacheLayout, store: any BlobStore, limits: LayerUnpacker.Limits = .init()) throws(TarError) {
        self.unpacker = LayerUnpacker(store: store, limits: limits)
        self.layout = layout
        do { try AtomicFile.makeDirectory(layout.indexes) } catch { throw TarError.store(error) }
        AtomicFile.removeStaleTemps(in: layout.indexes)
    }

    /// An index cache in the cache directory of `store`.
    public convenience init(store: DirectoryBlobStore, limits: LayerUnpacker.Limits = .init()) throws(TarError) {
        try self.init(layout: store.layout, store: store, limits: limits)
    }

    /// The persisted index of `layer`, when present, readable, of this format version, and for that layer.
    public func load(layer: Digest) -> LayerIndex? {
        guard let data = FileManager.default.contents(atPath: path(for: layer)),
            let persisted = try? JSONDecoder().decode(Persisted.self, from: data),
            persisted.formatVersion == Self.formatVersion, persisted.index.layer == layer
        else { return nil }
        return persisted.index
    }

    /// The index of `layer`: loaded when persisted and all its file contents are still in the store, else built
    /// from the blob at `blobPath` and persisted.
    /// - Throws: `TarError` (hostile entries, corruption, store failures); nothing is persisted then.
    public func build(layer: Digest, blobPath: String, mediaType: String? = nil) throws(TarError) -> LayerIndex {
        if let index = load(layer: layer), isComplete(index) { return index }
        do {
            return try FileLock.withExclusive(path: layout.indexLock(of: layer)) {
                if let index = load(layer: layer), isComplete(index) { return index }  // built while we waited
                let index = try unpacker.index(layer: layer, blobPath: blobPath, mediaType: mediaType)
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                let data = try encoder.encode(Persisted(formatVersion: Self.formatVersion, index: index))
                try AtomicFile.write(data, to: path(for: layer))
                return index
            }
        } catch let error as TarError {
            throw error
        } catch let error as CacheError {
            throw TarError.store(error)
        } catch {
            throw TarError.corrupt(path: nil, reason: "cannot encode index: \(error)")
        }
    }

    /// Persists an index built elsewhere (from an eStargz TOC), atomically, under the layer's index lock.
    /// - Throws: `TarError.store` when it cannot be written.
    public func save(_ index: LayerIndex) throws(TarError) {
        do {
            try FileLock.withExclusive(path: layout.indexLock(of: index.layer)) {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                let data = try encoder.encode(Persisted(formatVersion: Self.formatVersion, index: index))
                try AtomicFile.write(data, to: path(for: index.layer))
            }
        } catch let error as CacheError {
            throw TarError.store(error)
        } catch {
            throw TarError.corrupt(path: nil, reason: "cannot encode index: \(error)")
        }
    }

    /// Drops the persisted index (the file contents stay in the store).
    public func remove(layer: Digest) {
        unlink(path(for: layer))
    }

    /// True when every file content the index names is in the store (eviction may have removed some): the pack of
    /// a layer unpacked whole; else each content in the layer's pack (what a prefetch wrote) or a blob of its own.
    public func isComplete(_ index: LayerIndex) -> Bool {
        let pack = index.pack.flatMap { store.packPath(for: index.layer) != nil ? $0 : nil }
        if index.remote == nil && index.pack != nil { return pack != nil }
        let packed = pack?.offsets ?? [:]
        return index.contentDigests.allSatisfy { packed[$0] != nil || store.contains($0) }
    }

    /// Where the index of `layer` is persisted.
    public func path(for layer: Digest) -> String { layout.index(of: layer) }

    /// The layers that have a persisted index (readable or not: `load` decides that), for eviction's inventory.
    public func persistedLayers() -> [Digest] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: layout.indexes)) ?? []
        return names.compactMap { name in
            guard name.hasSuffix(".json") else { return nil }
            return try? Digest(hex: String(name.dropLast(".json".count)))
        }.sorted()
    }
}
