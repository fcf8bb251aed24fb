import Foundation
import ImageBuilder

#if canImport(Glibc)
    import Glibc
#endif

/// The vLLM compile artifacts written through a mount that can be published: the complete hash directories of
/// `torch_compile_cache/` in some uppers (docs/vllm.md, "Capture and publish").
///
/// Complete means vLLM has finished compiling what the directory is for, which it marks by writing one file last:
/// an AOT directory (`torch_aot_compile/<64 hex>/`) once a `rank_<r>_<dp>/model` artifact is there, a
/// `<10 hex>/` directory once a `rank_<r>_<dp>/<prefix>/vllm_compile_cache.py` is, in both cases a closed,
/// non-empty regular file (the overlay shows a written file only once its writer closes it). The whole hash
/// directory is taken, minus lock files, hidden files and temp directories; a symlink or special file anywhere
/// refuses it, and so does a directory past `limits`.
///
/// As with `UpperHarvest`, nothing in an upper is followed (`UpperDirectory` opens everything `O_NOFOLLOW` relative to
/// its parent) and `stage` copies into a private directory that the image is built from.
public struct VLLMHarvest: Sendable {
    public struct Entry: Sendable, Hashable {
        /// The hash directory's name: vLLM's cache key.
        public var hash: String
        public var upper: String
        /// Below the upper: `torch_compile_cache/<hash>` or `torch_compile_cache/torch_aot_compile/<hash>`.
        public var path: [String]
        /// Regular files below `path`, relative to it, sorted.
        public var files: [String]
    }

    public struct Limits: Sendable {
        public var bytes: Int64 = 16 << 30
        public var files = 100_000
        public var depth = 16

        public init() {}
    }

    public var entries: [Entry]
    public var skipped: [UpperHarvest.Skipped]

    /// - Parameter isKnown: hashes left out without a look (the mount's images provide them, or published before).
    public init(uppers: [String], leavingOut isKnown: (String) -> Bool, limits: Limits = Limits()) {
        var entries: [Entry] = []
        var skipped: [UpperHarvest.Skipped] = []
        var seen = Set<String>()
        for upper in uppers {
            guard let root = UpperDirectory(path: upper), let cache = root.subdirectory("torch_compile_cache") else {
                continue
            }
            var candidates: [(name: String, path: [String], directory: UpperDirectory)] = []
            for name in cache.names() where !Self.isTransient(name) {
                if name == "torch_aot_compile", let aot = cache.subdirectory(name) {
                    for hash in aot.names() where Self.isHex(hash, count: 64) {
                        if let directory = aot.subdirectory(hash) {
                            candidates.append((hash, ["torch_compile_cache", name, hash], directory))
                        }
                    }
                } else if Self.isHex(name, count: 10), let directory = cache.subdirectory(name) {
                    candidates.append((name, ["torch_compile_cache", name], directory))
                }
            }
            for (hash, path, directory) in candidates where !seen.contains(hash) && !isKnown(hash) {
                let location = upper + "/" + path.joined(separator: "/")
                switch Self.check(directory, aot: path.count == 3, limits: limits) {
                case .success(let files):
                    seen.insert(hash)
                    entries.append(Entry(hash: hash, upper: upper, path: path, files: files))
                case .failure(let refusal):
                    skipped.append(UpperHarvest.Skipped(path: location, reason: "\(refusal)"))
                }
            }
        }
        self.entries = entries
        self.skipped = skipped
    }

    static func isHex(_ name: String, count: Int) -> Bool {
        name.utf8.count == count && name.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// Names vLLM and Inductor write while working, never artifacts: locks, temp files, hidden files.
    static func isTransient(_ name: String) -> Bool {
        name.hasPrefix(".") || name.hasPrefix("tmp") || name.hasSuffix(".lock") || name.hasSuffix(".tmp")
    }

    /// The files of a complete hash directory, or why it is not one.
    static func check(_ directory: UpperDirectory, aot: Bool, limits: Limits) -> Result<[String], UpperHarvest.Refusal>
    {
        var files: [String] = []
        var bytes: Int64 = 0
        var complete = false
        func walk(_ directory: UpperDirectory, _ prefix: String, depth: Int) -> UpperHarvest.Refusal? {
            guard depth < limits.depth else { return .tooDeep(limit: limits.depth) }
            for name in directory.names() where !isTransient(name) {
                let path = prefix.isEmpty ? name : prefix + "/" + name
                if let child = directory.subdirectory(name) {
                    if let refusal = walk(child, path, depth: depth + 1) { return refusal }
                    continue
                }
                var info = stat()
                guard fstatat(directory.fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0,
                    info.st_mode & S_IFMT == S_IFREG
                else { return .unreadable(file: path, .notRegular) }
                bytes += Int64(info.st_size)
                files.append(path)
                guard files.count <= limits.files, bytes <= limits.bytes else {
                    return .overLimits(files: limits.files, bytes: limits.bytes)
                }
                let parts = path.split(separator: "/")
                let marker =
                    aot
                    ? parts.count == 2 && parts[0].hasPrefix("rank_") && name == "model"
                    : parts.count == 3 && parts[0].hasPrefix("rank_") && name == "vllm_compile_cache.py"
                if marker && info.st_size > 0 { complete = true }
            }
            return nil
        }
        if let refusal = walk(directory, "", depth: 0) { return .failure(refusal) }
        guard complete else { return .failure(aot ? .noModel : .noCompileCache) }
        return .success(files.sorted())
    }

    /// Copies `entry` into `directory` (a vLLM cache root of its own, created 0700).
    /// - Returns: false when the entry changed since the scan so that it no longer checks (nothing is copied).
    public func stage(_ entry: Entry, into directory: String, limits: Limits = Limits()) throws -> Bool {
        guard mkdir(directory, 0o700) == 0 else { throw PublishingError.io(operation: "mkdir", path: directory, errno) }
        let upper = UpperDirectory(path: entry.upper)
        guard let owner = upper?.owner else { return false }
        var source = upper
        for component in entry.path { source = source?.subdirectory(component) }
        guard let source, case .success(let files) = Self.check(source, aot: entry.path.count == 3, limits: limits)
        else { return false }
        for file in files {
            let parts = file.split(separator: "/").map(String.init)
            var from: UpperDirectory? = source
            for component in parts.dropLast() { from = from?.subdirectory(component) }
            guard let from else { return false }
            let target = ([directory] + entry.path + parts).joined(separator: "/")
            try FileManager.default.createDirectory(
                atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o755])
            guard try Self.copy(parts.last!, in: from, owner: owner, limit: limits.bytes, to: target) else {
                return false
            }
        }
        return true
    }

    /// Streams a regular file of `directory` to a new file at `target`, at most the size it has when opened
    /// (`UpperDirectory.OpenedFile`: artifacts run to gigabytes for large models, never read whole into memory,
    /// and a writer that keeps appending cannot make the copy grow). False when it is no longer a regular file of
    /// at most `limit` bytes (the hash directory's whole limit: the walk checked the sum; this catches a file that
    /// grew since), or not one `owner` wrote alone (another owner, or a hard link:
    /// `UpperDirectory.ReadFailure`).
    static func copy(_ name: String, in directory: UpperDirectory, owner: UInt32, limit: Int64, to target: String)
        throws -> Bool
    {
        let source: UpperDirectory.OpenedFile
        do { source = try directory.openFile(name, owner: owner, limit: limit) } catch { return false }
        let out = try StagedFile(creating: target, executable: source.isExecutable)
        do {
            try source.stream { try out.write($0) }
        } catch UpperDirectory.ReadFailure.io(let code) {
            throw PublishingError.io(operation: "read", path: target, code)
        }
        return true
    }
}
