import Foundation
import LayerArchive
import OCI

/// Collects loaded images into an `ImageTree`, in the mount's documented order (`Precedence`): the first rank of
/// images that has a KEY gives it whole, unless that rank's images disagree on it. A mount adds its images to its tree one by one as they load
/// (`contributions`); `extract` adds them all, then builds.
public struct ImageTreeBuilder {
    /// Layer directories whose contents form the cache root (MCV layout, docs/mcv-images.md). vLLM content sits at the
    /// root beside Triton's `<KEY>/` directories: the two never share a name (vLLM's top level is
    /// `torch_compile_cache/`), so one mount serves both `TRITON_CACHE_DIR` and `VLLM_CACHE_ROOT`.
    public static let cacheRoots = ["io.triton.cache/", "io.vllm.cache/"]

    public struct Options: Sendable {
        /// The cache root as consuming processes see it; group files name children under it.
        public var consumerRoot: String
        public var filter: KernelFilter
        /// Adds read and search permission for everyone to directories (for `allow_other` mounts).
        public var worldReadable: Bool

        public init(consumerRoot: String, filter: KernelFilter, worldReadable: Bool) {
            self.consumerRoot = consumerRoot
            self.filter = filter
            self.worldReadable = worldReadable
        }
    }

    /// What the builder hid and why, for status.
    public struct Report: Sendable, Hashable, Codable {
        public var kernelsShown = 0
        public var kernelsHidden = 0
        public var groupFilesRelocated = 0
        /// Lookups answered "no such name" because only an image that is failing, or still loading at the
        /// operation's deadline, might have provided the name (optional: documents of older daemons lack it).
        public var lookupsAbsentDuringFaults: Int? = nil
        /// KEYs for which an image holds other bytes than the image served, or than a peer of its rank (the KEY
        /// is then withheld) (`KeyOwnership.Conflict`): a sign of compromise or of a compiler that is not
        /// deterministic. Counted once per KEY and image.
        public var keyConflicts: Int? = nil
        /// The first `conflictsListed` of them.
        public var conflicts: [KeyOwnership.Conflict]? = nil

        static let conflictsListed = 50
    }

    private let options: Options
    private let readBlob: @Sendable (Digest) throws -> Data
    private var images: [[String: SubtreeResolver.Contribution]] = []

    /// - Parameter readBlob: reads a verified file blob (kernel metadata and group files are read to filter
    ///   and relocate, when a top-level name is resolved).
    public init(options: Options, readBlob: @escaping @Sendable (Digest) throws -> Data) {
        self.options = options
        self.readBlob = readBlob
    }

    /// Adds one image's layers, ranked as a mount ranks them (`Precedence`), after the images added before.
    /// - Parameter batch: when the image was first used (`Precedence.batch`): 0 for a mount's first images.
    public mutating func add(layers: [LayerIndex], image: CacheImage, batch: Int = 0) {
        images.append(
            Self.contributions(
                of: layers, image: image, precedence: Precedence(of: image, position: images.count, batch: batch)))
    }

    /// What one image holds under each top-level name of its cache roots, as the tree merges it.
    /// - Parameter precedence: the image's place in the mount's merge order.
    static func contributions(
        of layers: [LayerIndex], image: CacheImage, precedence: Precedence
    ) -> [String: SubtreeResolver.Contribution] {
        // Entries of one directory are neighbours in a layer: the current group is found without hashing.
        var byTop: [String: [(path: String, file: LayerFile)]] = [:]
        var current: (top: Substring, entries: [(path: String, file: LayerFile)])?
        for (path, file) in LayerFile.flatten(layers) {
            guard let root = cacheRoots.first(where: { path.utf8.starts(with: $0.utf8) }) else { continue }
            let relative = path.dropFirst(root.count)
            guard !relative.isEmpty else { continue }
            let top = relative.firstIndex(of: "/").map { relative[..<$0] } ?? relative
            if current?.top != top {
                if let done = current { byTop[String(done.top), default: []] += done.entries }
                current = (top, [])
            }
            current!.entries.append((String(relative), file))
        }
        if let done = current { byTop[String(done.top), default: []] += done.entries }
        let backends = Set((image.targets ?? []).map(\.backend))
        return byTop.mapValues {
            SubtreeResolver.Contribution(
                precedence: precedence, image: image.name, backends: backends, entries: $0)
        }
    }

    /// The resolver a tree of these options uses.
    func resolver() -> SubtreeResolver { SubtreeResolver(options: options, readBlob: readBlob) }

    /// The tree of what was added: top-level names at once, what lies under each resolved on first use.
    /// - Parameters:
    ///   - prefetch: fetches the given blobs together ahead of a resolution of every name (a root listing).
    ///   - retryDelay: how long a name whose resolution failed answers that failure before trying again.
    public func build(
        rootIno: UInt64, firstIno: UInt64, retryDelay: Duration = .zero,
        prefetch: @escaping @Sendable ([Digest]) -> Void = { _ in }
    ) -> ImageTree {
        let tree = ImageTree(
            rootIno: rootIno, firstIno: firstIno, resolver: resolver(), prefetch: prefetch, retryDelay: retryDelay)
        for image in images { tree.add(image) }
        return tree
    }
}
