import Foundation
import LayerArchive
import Synchronization

/// Which top-level names (Triton `<KEY>/` directories, vLLM's `torch_compile_cache`) a mount's readers opened a file
/// under, in first-open order, overall and per image: the hot set a next push can put first in its layer
/// (`mcvfs push --hot-set`), so that the next node's first lookup fetches all of it in one request.
///
/// Served as `.mcvfs/hot-set` (the text form, every image) and `.mcvfs/hot-sets.json` (image name → names).
/// A leaf lock, held only to update or copy the sets.
public final class HotSetRecorder: Sendable {
    struct State {
        var all = HotSet()
        var byImage: [String: HotSet] = [:]

        /// Records `name`, provided by `images`; true when it is new to the mount.
        mutating func record(_ name: String, images: [String]) -> Bool {
            guard all.insert(name) else { return false }
            for image in images { byImage[image, default: HotSet()].insert(name) }
            return true
        }
    }

    private let state = Mutex(State())

    public init() {}

    /// Notes an open below the top-level `name`, which `images` provide (asked only the first time).
    func record(_ name: String, images: () -> [String]) {
        guard !state.withLock({ $0.all.contains(name) }) else { return }
        let providers = images()
        state.withLock { _ = $0.record(name, images: providers) }
    }

    /// Every name recorded, in first-open order.
    public var hotSet: HotSet { state.withLock { $0.all } }

    /// The names each image provides, in first-open order.
    public var byImage: [String: HotSet] { state.withLock { $0.byImage } }

    /// `.mcvfs/hot-sets.json`: image name → names.
    var document: Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return (try? encoder.encode(byImage.mapValues(\.names))) ?? Data("{}".utf8)
    }
}
