import Foundation
import ImageBuilder
import ImageFS
import LayerArchive
import OCI
import Synchronization

/// The top-level names (Triton's `<KEY>/` directories) and vLLM hash directories that images provide, read from their layer indexes and
/// kept per image digest: an image never changes, so each is read once however often a daemon publishes.
///
/// Lock order: `known` is a leaf, never held while an index is read.
public final class ProvidedKeys: Sendable {
    private let known = Mutex<[Digest: Set<String>]>([:])

    public init() {}

    /// The keys of `images`, indexing (through `provider`) those not read yet.
    /// - Returns: the keys, and the images whose index could not be read (their keys are then unknown: a publish
    ///   may push a kernel one of them already holds, which consumers see once anyway).
    public func keys(of images: [CacheImage], provider: any LayerProvider) -> (keys: Set<String>, unread: [String]) {
        var keys = Set<String>()
        var unread: [String] = []
        for image in images {
            if let cached = known.withLock({ $0[image.digest] }) {
                keys.formUnion(cached)
                continue
            }
            do {
                let layers = try image.layers.map { try provider.index(of: $0, in: image) }
                let names = Self.topLevelNames(layers)
                known.withLock { $0[image.digest] = names }
                keys.formUnion(names)
            } catch {
                unread.append("\(image.name): \(error)")
            }
        }
        return (keys, unread)
    }

    /// The names an image shows at the mount root: the first component below each layer's cache roots.
    public static func topLevelNames(_ layers: [LayerIndex]) -> Set<String> {
        var names = Set<String>()
        for relative in cachePaths(layers) {
            if let top = relative.split(separator: "/").first { names.insert(String(top)) }
        }
        // A vLLM image provides its hash directories (VLLMHarvest's keys).
        return names.union(vllmHashes(layers))
    }

    /// The vLLM hash directories the layers hold: a vLLM image's KEYs.
    public static func vllmHashes(_ layers: [LayerIndex]) -> Set<String> {
        Set(cachePaths(layers).compactMap { VLLMCacheLayout.hash(ofPath: String($0)) })
    }

    /// Each entry's path below its layer's cache root.
    private static func cachePaths(_ layers: [LayerIndex]) -> [Substring] {
        layers.flatMap(\.entries).compactMap { entry in
            ImageTreeBuilder.cacheRoots.first(where: { entry.path.hasPrefix($0) }).map {
                entry.path.dropFirst($0.count)
            }
        }
    }
}
