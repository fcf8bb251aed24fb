import Foundation
import GPU
import OCI

#if canImport(Glibc)
    import Glibc
#endif

/// What a cache directory holds, as a cache image will carry it: the files to pack, the kernels their metadata
/// describes, and what was left out and why.
///
/// Two kinds are recognised (docs/triton-cache.md): a Triton cache (`TRITON_CACHE_DIR`: one `<KEY>/` directory per
/// entry) and a vLLM cache root (`VLLM_CACHE_ROOT`, holding `torch_compile_cache/`). Left out, and reported:
/// Triton's temp dirs (`tmp.pid_*`), lock files, hidden files, sockets and other special files, and for Triton
/// anything that is not a `<KEY>/` directory of files. Refused outright: symlinks leaving the directory and files
/// that cannot be read, since an image missing what the user asked to publish is worse than no image.
public struct CacheScan: Sendable {
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        case triton
        case vllm

        /// The layer directory holding the cache (docs/mcv-images.md).
        public var cacheDirectory: String { self == .triton ? "io.triton.cache" : "io.vllm.cache" }
        /// The layer directory holding MCV's `manifest.json`.
        public var manifestDirectory: String { self == .triton ? "io.triton.manifest" : "io.vllm.manifest" }
    }

    public struct File: Sendable, Hashable {
        public enum Content: Sendable, Hashable {
            case directory
            case file(size: Int64, executable: Bool)
            /// Relative target, checked to stay inside the cache directory.
            case symlink(target: String)
        }

        /// Relative to the cache directory, `/`-separated.
        public var path: String
        public var content: Content
    }

    /// One compiled kernel: its `<name>.json` decoded.
    public struct Kernel: Sendable, Hashable {
        /// The `<KEY>` directory, relative to the cache directory.
        public var directory: String
        public var metadata: KernelMetadata

        public static func == (a: Kernel, b: Kernel) -> Bool {
            a.directory == b.directory && a.metadata.hash == b.metadata.hash && a.metadata.name == b.metadata.name
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(directory)
            hasher.combine(metadata.hash)
        }
    }

    public struct Skipped: Sendable, Hashable {
        public var path: String
        public var reason: String
    }

    public var kind: Kind
    /// The directory as given, made absolute.
    public var root: String
    /// In path order; directories included.
    public var files: [File]
    public var kernels: [Kernel]
    public var skipped: [Skipped]
    /// vLLM: the cache keys vLLM computed, as its hash directories name them (`torch_compile_cache/<10 hex>`,
    /// `torch_compile_cache/torch_aot_compile/<64 hex>`), sorted.
    public var vllmHashes: [String]
    /// vLLM: targets of compiled code that no Triton kernel JSON names (Inductor's C++ kernels: `cpu:<ISA>`).
    public var vllmTargets: [GPUTarget] = []

    public var totalBytes: Int64 {
        files.reduce(0) { total, file in
            if case .file(let size, _) = file.content { return total + size }
            return total
        }
    }

    /// Distinct targets of the compiled code, in a stable order (backend, arch, warp size).
    public var targets: [GPUTarget] { Self.distinctTargets(kernels.map(\.metadata.target) + vllmTargets) }

    static func distinctTargets(_ targets: [GPUTarget]) -> [GPUTarget] {
        var seen = Set<GPUTarget>()
        return targets.filter { seen.insert($0).inserted }.sorted {
            ($0.backend.rawValue, $0.arch, $0.warpSize ?? 0) < ($1.backend.rawValue, $1.arch, $1.warpSize ?? 0)
        }
    }
}

extension CacheScan {
    /// Scans `path`.
    ///
    /// - Throws: `BuildError.notADirectory`, `.emptyDirectory`, `.notACache`, `.unreadable`, `.escapingSymlink`,
    ///   `.invalidName`.
    public init(scanning path: String) throws(BuildError) {
        let root = URL(fileURLWithPath: path).standardizedFileURL.path
        var info = stat()
        guard stat(root, &info) == 0 else { throw BuildError.unreadable(path: root, errno: errno) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw BuildError.notADirectory(root) }
        guard
            let realRoot = realpath(root, nil).map({ p in
                defer { free(p) }
                return String(cString: p)
            })
        else {
            throw BuildError.unreadable(path: root, errno: errno)
        }
        var walker = Walker(root: root, realRoot: realRoot)
        let top = try walker.list("")
        if top.isEmpty { throw BuildError.emptyDirectory(root) }
        if top.contains(where: { $0.name == "torch_compile_cache" && $0.isDirectory }) {
            try walker.walkVLLM(top)
            self.init(
                kind: .vllm, root: root, files: walker.files, kernels: walker.kernels, skipped: walker.skipped,
                vllmHashes: walker.vllmHashes)
            vllmTargets = VLLMCacheLayout.cpuTargets(
                files: files, root: root, fallback: VLLMCacheLayout.hostCPUTarget())
        } else {
            try walker.walkTriton(top, under: "")
            guard !walker.kernels.isEmpty || walker.sawHelper else {
                throw BuildError.notACache(
                    path: root,
                    reason: "no <KEY>/ directory holds a Triton kernel (<name>.json with hash and target, "
                        + "__grp__<name>.json) or driver helper, and there is no torch_compile_cache/ (vLLM)")
            }
            self.init(
                kind: .triton, root: root, files: walker.files, kernels: walker.kernels, skipped: walker.skipped,
                vllmHashes: [])
        }
        files.sort { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        kernels.sort { ($0.directory, $0.metadata.name) < ($1.directory, $1.metadata.name) }
    }

    /// Triton key directory names: base32 (52 characters, Triton 3.x) or hex sha256 (64, Triton 2.x).
    static func isTritonKey(_ name: String) -> Bool {
        let base32 =
            name.utf8.count == 52
            && name.utf8.allSatisfy { (65...90).contains($0) || (50...55).contains($0) }
        let hex =
            name.utf8.count == 64
            && name.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
        return base32 || hex
    }

    /// Names that are never cache content: Triton's and vLLM's in-flight temp dirs, lock files, hidden files.
    static func transientReason(_ name: String) -> String? {
        if name.hasPrefix("tmp.pid_") { return "Triton temporary directory" }
        if name.hasSuffix(".lock") || name == "lock" { return "lock file" }
        if name.hasPrefix(".") { return "hidden file" }
        return nil
    }
}

private struct Walker {
    struct Item {
        var name: String
        var path: String
        var mode: mode_t
        var size: Int64
        var isDirectory: Bool { mode & S_IFMT == S_IFDIR }
        var isRegular: Bool { mode & S_IFMT == S_IFREG }
        var isSymlink: Bool { mode & S_IFMT == S_IFLNK }
    }

    let root: String
    let realRoot: String
    var files: [CacheScan.File] = []
    var kernels: [CacheScan.Kernel] = []
    var skipped: [CacheScan.Skipped] = []
    var vllmHashes: [String] = []
    var sawHelper = false

    init(root: String, realRoot: String) {
        self.root = root
        self.realRoot = realRoot
    }

    func absolute(_ relative: String) -> String { relative.isEmpty ? root : root + "/" + relative }

    /// The entries of `relative`, sorted, with `lstat` results.
    func list(_ relative: String) throws(BuildError) -> [Item] {
        let directory = absolute(relative)
        guard let dir = opendir(directory) else { throw BuildError.unreadable(path: directory, errno: errno) }
        defer { closedir(dir) }
        var items: [Item] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw BuildError.unreadable(path: directory, errno: errno) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                let bytes = raw.prefix(while: { $0 != 0 })
                return String(validating: bytes, as: UTF8.self) ?? ("\u{FFFD}" + String(decoding: bytes, as: UTF8.self))
            }
            if name == "." || name == ".." { continue }
            let path = relative.isEmpty ? name : relative + "/" + name
            if name.hasPrefix("\u{FFFD}") { throw BuildError.invalidName(absolute(path)) }
            var info = stat()
            guard lstat(absolute(path), &info) == 0 else {
                throw BuildError.unreadable(path: absolute(path), errno: errno)
            }
            items.append(Item(name: name, path: path, mode: info.st_mode, size: Int64(info.st_size)))
        }
        return items.sorted { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
    }

    mutating func skip(_ path: String, _ reason: String) {
        skipped.append(CacheScan.Skipped(path: path, reason: reason))
    }

    /// A Triton cache at `relative` (the root, or a vLLM `triton_cache/`): `<KEY>/` directories of files.
    mutating func walkTriton(_ items: [Item], under relative: String) throws(BuildError) {
        for item in items {
            if let reason = CacheScan.transientReason(item.name) {
                skip(item.path, reason)
                continue
            }
            guard item.isDirectory else {
                skip(item.path, "not a cache entry (a Triton cache holds only <KEY>/ directories)")
                continue
            }
            guard CacheScan.isTritonKey(item.name) else {
                skip(item.path, "not a Triton cache key directory")
                continue
            }
            var entries: [Item] = []
            for child in try list(item.path) {
                if let reason = CacheScan.transientReason(child.name) {
                    skip(child.path, reason)
                } else if child.isDirectory {
                    skip(child.path, "directory inside a cache entry")
                } else if child.isRegular || child.isSymlink {
                    entries.append(child)
                } else {
                    skip(child.path, "not a regular file")
                }
            }
            if entries.isEmpty {
                skip(item.path, "empty cache entry")
                continue
            }
            files.append(CacheScan.File(path: item.path, content: .directory))
            for child in entries {
                try add(child)
                if child.name.hasSuffix(".so") { sawHelper = true }
                if child.isRegular, child.name.hasSuffix(".json"), !child.name.hasPrefix("__grp__"),
                    let data = FileManager.default.contents(atPath: absolute(child.path)),
                    let metadata = try? KernelMetadata(json: data)
                {
                    kernels.append(CacheScan.Kernel(directory: item.path, metadata: metadata))
                }
            }
        }
    }

    /// A vLLM cache root: `torch_compile_cache/` packed whole (minus transient files); Triton caches inside it
    /// (`triton_cache/` directories) are read for kernel metadata.
    mutating func walkVLLM(_ top: [Item]) throws(BuildError) {
        for item in top {
            guard item.name == "torch_compile_cache", item.isDirectory else {
                skip(item.path, "not part of vLLM's compile cache (torch_compile_cache/)")
                continue
            }
            files.append(CacheScan.File(path: item.path, content: .directory))
            try walkTree(try list(item.path))
        }
        vllmHashes = VLLMCacheLayout.hashes(in: files.map(\.path))
        if files.count <= 1 && kernels.isEmpty {
            throw BuildError.notACache(path: root, reason: "torch_compile_cache/ holds no compiled entries")
        }
    }

    mutating func walkTree(_ items: [Item]) throws(BuildError) {
        for item in items {
            if let reason = CacheScan.transientReason(item.name) {
                skip(item.path, reason)
                continue
            }
            if item.isDirectory && item.name == "triton_cache" {
                files.append(CacheScan.File(path: item.path, content: .directory))
                try walkTriton(try list(item.path), under: item.path)
            } else if item.isDirectory {
                files.append(CacheScan.File(path: item.path, content: .directory))
                try walkTree(try list(item.path))
            } else if item.isRegular || item.isSymlink {
                try add(item)
                recordNestedKernel(item)
            } else {
                skip(item.path, "not a regular file")
            }
        }
    }

    /// A Triton kernel's `<name>.json` inside a cache nested in vLLM's (`inductor_cache/triton/<device>/<KEY>/`,
    /// where Inductor keeps Triton's cache on vLLM 0.30+): recorded like a kernel of a Triton cache.
    mutating func recordNestedKernel(_ item: Item) {
        let parts = item.path.split(separator: "/")
        guard item.isRegular, parts.count >= 2, CacheScan.isTritonKey(String(parts[parts.count - 2])),
            item.name.hasSuffix(".json"), !item.name.hasPrefix("__grp__"),
            let data = FileManager.default.contents(atPath: absolute(item.path)),
            let metadata = try? KernelMetadata(json: data)
        else { return }
        kernels.append(
            CacheScan.Kernel(directory: parts.dropLast().joined(separator: "/"), metadata: metadata))
    }

    /// Adds a regular file (checked readable now, so a push fails before uploading anything) or a symlink.
    mutating func add(_ item: Item) throws(BuildError) {
        let path = absolute(item.path)
        if item.isSymlink {
            files.append(CacheScan.File(path: item.path, content: .symlink(target: try containedTarget(of: item))))
            return
        }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw BuildError.unreadable(path: path, errno: errno) }
        // Reading one byte catches files open() accepts but cannot deliver (EIO on a broken disk or FUSE file).
        var byte: UInt8 = 0
        let n = read(fd, &byte, 1)
        let readErrno = errno
        close(fd)
        guard n >= 0 else { throw BuildError.unreadable(path: path, errno: readErrno) }
        files.append(
            CacheScan.File(path: item.path, content: .file(size: item.size, executable: item.mode & 0o111 != 0)))
    }

    /// The symlink's target as a relative path that resolves inside the cache directory, or an error.
    func containedTarget(of item: Item) throws(BuildError) -> String {
        let path = absolute(item.path)
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { throw BuildError.unreadable(path: path, errno: errno) }
        let target = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // Resolve fully (every symlink on the way, as the kernel would) and require the result inside the root.
        guard
            let resolved = realpath(path, nil).map({ p in
                defer { free(p) }
                return String(cString: p)
            }),
            resolved.hasPrefix(realRoot + "/")
        else { throw BuildError.escapingSymlink(path: path, target: target) }
        // Store it relative to the link's own directory, so the layer never names a path of this machine.
        let linkDirectory = item.path.split(separator: "/").dropLast().map(String.init)
        let destination = resolved.dropFirst(realRoot.count + 1).split(separator: "/").map(String.init)
        var common = 0
        while common < linkDirectory.count, common < destination.count, linkDirectory[common] == destination[common] {
            common += 1
        }
        let ups = Array(repeating: "..", count: linkDirectory.count - common)
        let relative = (ups + destination[common...]).joined(separator: "/")
        return target.hasPrefix("/") || target != relative && !Self.isLexicallyInside(target, from: linkDirectory)
            ? relative : target
    }

    /// True when `target`, taken relative to `directory` without following links, never climbs above the root.
    static func isLexicallyInside(_ target: String, from directory: [String]) -> Bool {
        var depth = directory.count
        for component in target.split(separator: "/") where component != "." {
            if component == ".." {
                depth -= 1
                if depth < 0 { return false }
            } else {
                depth += 1
            }
        }
        return true
    }
}
