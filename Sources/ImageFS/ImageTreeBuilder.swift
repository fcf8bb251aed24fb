import Foundation
import OCI
import TarIndex

/// Builds an `ImageTree` from loaded images, in the mount's documented order: the first image that has a file
/// wins it; directories of the same name merge.
public struct ImageTreeBuilder {
    /// Layer directories whose contents form the cache root (MCV layout, DOMAIN.md §3). vLLM content sits at the
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
    }

    private let options: Options
    private let readBlob: (Digest) throws -> Data
    private var paths: [String: LayerFile] = [:]
    public private(set) var report = Report()

    /// - Parameter readBlob: reads a verified file blob (kernel metadata and group files are read to filter
    ///   and relocate).
    public init(options: Options, readBlob: @escaping (Digest) throws -> Data) {
        self.options = options
        self.readBlob = readBlob
    }

    /// Adds one image's layers; files already present from an earlier image are kept.
    public mutating func add(layers: [LayerIndex], image: CacheImage) throws {
        var files: [String: LayerFile] = [:]
        for (path, file) in LayerFile.flatten(layers) {
            guard let root = Self.cacheRoots.first(where: { path.hasPrefix($0) }) else { continue }
            let relative = String(path.dropFirst(root.count))
            if !relative.isEmpty { files[relative] = file }
        }
        for hidden in try hiddenDirectories(in: files, image: image) {
            let prefix = hidden + "/"
            files = files.filter { $0.key != hidden && !$0.key.hasPrefix(prefix) }
        }
        for (path, file) in files
        where paths[path] == nil || (file.kind == .directory && paths[path]?.kind == .directory) {
            paths[path] = file
        }
    }

    /// Kernel directories for targets the filter refuses, and driver-helper directories of another backend.
    private mutating func hiddenDirectories(in files: [String: LayerFile], image: CacheImage) throws -> [String] {
        var byDirectory: [String: [String: LayerFile]] = [:]
        for (path, file) in files {
            let (directory, name) = Self.split(path)
            byDirectory[directory, default: [:]][name] = file
        }
        let imageBackends = Set((image.targets ?? []).map(\.backend))
        var hidden: [String] = []
        for (directory, entries) in byDirectory where !directory.isEmpty {
            let kernels = entries.keys.filter(GroupRelocation.isGroupFile).map {
                String($0.dropFirst("__grp__".count))
            }
            var targets: [GPUTarget] = []
            for metadataName in kernels {
                if case .file(let digest)? = entries[metadataName]?.kind,
                    let target = KernelFilter.target(ofKernelMetadata: try readBlob(digest))
                {
                    targets.append(target)
                }
            }
            if !targets.isEmpty {
                if targets.contains(where: options.filter.acceptsTarget) {
                    report.kernelsShown += 1
                } else {
                    report.kernelsHidden += 1
                    hidden.append(directory)
                }
                continue
            }
            let helperBackends = Set(entries.keys.compactMap(KernelFilter.backend(ofHelper:)))
            let backends = helperBackends.isEmpty ? imageBackends : helperBackends
            if !backends.isEmpty && !backends.contains(where: options.filter.acceptsBackend) {
                hidden.append(directory)
            }
        }
        return hidden
    }

    /// Lays the collected paths out as inodes, numbering from `firstIno` in sorted path order.
    public mutating func build(rootIno: UInt64, firstIno: UInt64) throws -> ImageTree {
        // Parents before children: sorted paths put "a" before "a/b"; missing parents are synthesised.
        var all = paths
        for path in paths.keys {
            var parent = Self.split(path).directory
            while !parent.isEmpty, all[parent] == nil {
                all[parent] = LayerFile(kind: .directory, permissions: 0o755, size: 0, modified: 0)
                parent = Self.split(parent).directory
            }
        }
        let ordered = all.keys.sorted()
        var inoByPath: [String: UInt64] = ["": rootIno]
        var nodes: [ImageTree.Node] = [
            ImageTree.Node(
                ino: rootIno, parent: rootIno, name: "", kind: .directory, permissions: directoryPermissions(0o755),
                size: 0, modified: 0, content: nil, linkTarget: nil, children: [:], listing: [])
        ]
        var indexByIno: [UInt64: Int] = [rootIno: 0]
        for (offset, path) in ordered.enumerated() {
            let ino = firstIno + UInt64(offset) + 1
            inoByPath[path] = ino
            let (directory, name) = Self.split(path)
            let parentIno = inoByPath[directory] ?? rootIno
            let file = all[path]!
            var node = ImageTree.Node(
                ino: ino, parent: parentIno, name: name, kind: .directory, permissions: file.permissions & 0o777,
                size: file.size, modified: file.modified, content: nil, linkTarget: nil, children: [:], listing: [])
            switch file.kind {
            case .directory:
                node.permissions = directoryPermissions(file.permissions)
                node.size = 0
            case .symlink(let target):
                node.kind = .symlink
                node.linkTarget = target
            case .file(let digest):
                node.kind = .file
                node.content = .blob(digest)
                if Relocation.applies(to: name),
                    let rewritten = Relocation.rewrite(
                        try readBlob(digest), name: name, directory: directory, root: options.consumerRoot)
                {
                    node.content = .bytes(rewritten)
                    node.size = Int64(rewritten.count)
                    report.groupFilesRelocated += 1
                }
            }
            indexByIno[ino] = nodes.count
            nodes.append(node)
            let parentIndex = indexByIno[parentIno]!
            nodes[parentIndex].children[name] = ino
            nodes[parentIndex].listing.append(name)
        }
        // Slot 0 is the root; the rest are stored at ino - firstIno.
        return ImageTree(rootIno: rootIno, firstIno: firstIno, nodes: nodes)
    }

    private func directoryPermissions(_ mode: UInt32) -> UInt32 {
        let base = mode & 0o777
        return options.worldReadable ? base | 0o555 : base
    }

    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }
}
