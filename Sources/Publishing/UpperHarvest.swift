import Foundation
import ImageFS

#if canImport(Glibc)
    import Glibc
#endif

/// The kernels written through a mount that can be published: the complete Triton entries of some of its uppers.
///
/// An entry is a `<KEY>/` directory whose group files (`__grp__<name>.json`, which Triton writes last, after every
/// file it names) parse, and every child they name is there as a closed, non-empty regular file. The overlay makes
/// a written file appear only when its writer closes it (a file created with `O_EXCL` appears at once, empty,
/// which is why empty children do not count). So half-written entries and Triton's `tmp.pid_*` directories are
/// never taken, and only the files a group names are: nothing else a user left in the directory.
///
/// Uppers are written by users (by other uids when root publishes them), so nothing in them is trusted: every
/// directory and file is reached through `UpperDirectory` (descriptors, no link followed, no FIFO blocking), every
/// name passes `EntryName`, every size `PublishLimits`, every file is its writer's own with one link (never a hard
/// link to a file of someone else's), and a refusal refuses its entry alone, with its reason:
/// one user's bad entry never stops the others. `stage` copies what is taken into a private directory first, in
/// bounded chunks; the image is built from that copy, never from the upper, so nothing can change between the
/// checks and the build.
public struct UpperHarvest: Sendable {
    public struct Entry: Sendable, Hashable {
        public var key: String
        /// The upper directory the entry is in.
        public var upper: String
        /// The group files and the children they name, sorted.
        public var files: [String]
        /// Their sizes at the scan, in bytes.
        public var bytes: Int64 = 0
    }

    public struct Skipped: Sendable, Hashable, Codable {
        public var path: String
        public var reason: String
    }

    /// What `stage` copied, and the entries it refused on the way.
    public struct Staged: Sendable {
        public var entries: [Entry] = []
        public var skipped: [Skipped] = []
    }

    public var entries: [Entry]
    /// Entries not taken, and why (entries left out because they are known are not listed).
    public var skipped: [Skipped]
    public let limits: PublishLimits

    /// Scans each upper's top-level directories.
    /// - Parameter isKnown: keys left out without a look: those the mount's images provide and those published
    ///   before.
    public init(uppers: [String], limits: PublishLimits = PublishLimits(), leavingOut isKnown: (String) -> Bool) {
        var entries: [Entry] = []
        var skipped: [Skipped] = []
        for upper in uppers {
            guard let root = UpperDirectory(path: upper) else { continue }  // a uid that never wrote has no upper
            for name in root.names() where !OverlayFileSystem.isBookkeeping(name) && !isKnown(name) {
                let path = upper + "/" + EntryName.printable(name)
                if let problem = EntryName.problem(name) {
                    skipped.append(Skipped(path: path, reason: "\(Refusal.badName(problem))"))
                    continue
                }
                if let reason = Self.ignoredReason(name) {
                    skipped.append(Skipped(path: path, reason: reason))
                    continue
                }
                switch Self.check(name, in: root, of: upper, limits: limits) {
                case .success(let checked):
                    entries.append(Entry(key: name, upper: upper, files: checked.files, bytes: checked.bytes))
                case .failure(let refusal): skipped.append(Skipped(path: path, reason: "\(refusal)"))
                }
            }
        }
        // The first upper that has a key wins it, as the uppers are given.
        var seen = Set<String>()
        self.entries = entries.filter { seen.insert($0.key).inserted }
        self.skipped = skipped
        self.limits = limits
    }

    /// Top-level names that are never kernels to publish.
    static func ignoredReason(_ name: String) -> String? {
        if name.hasPrefix("tmp.pid_") { return "Triton temporary directory" }
        if name == "torch_compile_cache" {
            return "vLLM compile cache: not Triton entries; its complete hash directories are published as vLLM "
                + "images (docs/vllm.md)"
        }
        if name.hasPrefix(".") { return "hidden file" }
        return nil
    }

    /// Why an entry (a Triton `<KEY>/` directory, or a vLLM hash directory: `VLLMHarvest`) is not taken; its
    /// `description` is the reason a publish reports for it (`Skipped.reason`).
    enum Refusal: Error, Equatable, CustomStringConvertible {
        /// The entry's name, or a group file's, is not one a publish takes.
        case badName(EntryName.Problem)
        /// A group file names a child whose name a publish does not take.
        case badChildName(group: String, EntryName.Problem)
        /// A file of the entry that is not read: a link, a FIFO, another owner's, one too large...
        case unreadable(file: String, UpperDirectory.ReadFailure)
        case missing(file: String)
        /// Empty at the scan: its writer has not closed it yet.
        case empty(file: String)
        /// Not empty at the scan, empty when staged.
        case emptyNow(file: String)

        // A Triton entry
        case notADirectory
        case ownerUnreadable
        case noGroupFile
        case notAGroupFile(String)

        // A vLLM hash directory
        case tooDeep(limit: Int)
        case overLimits(files: Int, bytes: Int64)
        /// An AOT directory without its `rank_*/model` marker yet.
        case noModel
        /// An Inductor directory without its `rank_*/<prefix>/vllm_compile_cache.py` marker yet.
        case noCompileCache

        var description: String {
            switch self {
            case .badName(let problem): return "refused: \(problem)"
            case .badChildName(let group, let problem): return "refused: \(group) names \(problem)"
            case .unreadable(let file, let failure): return "refused: \(file) \(failure)"
            case .missing(let file): return "incomplete: \(file) is missing"
            case .empty(let file): return "incomplete: \(file) is empty (still being written)"
            case .emptyNow(let file): return "\(file) is empty now"
            case .notADirectory: return "not a directory (a Triton cache holds <KEY>/ directories)"
            case .ownerUnreadable: return "its owner cannot be read"
            case .noGroupFile: return "no group file yet (an entry being written, or a driver helper)"
            case .notAGroupFile(let group): return "\(group) is not a Triton group file"
            case .tooDeep(let limit): return "refused: deeper than \(limit)"
            case .overLimits(let files, let bytes): return "refused: over \(files) files or \(bytes) bytes"
            case .noModel: return "incomplete: no rank_*/model yet (vLLM writes it when compiling is done)"
            case .noCompileCache: return "incomplete: no rank_*/<prefix>/vllm_compile_cache.py yet"
            }
        }
    }

    /// What a complete entry holds.
    struct Checked {
        /// The group files and the children they name, sorted.
        var files: [String]
        var bytes: Int64
        /// The uid every file must belong to.
        var owner: UInt32
    }

    /// The files of a complete entry, or why it is not one.
    /// - Parameter path: the upper's path (`root`'s), which names whose upper it is.
    static func check(
        _ key: String, in root: UpperDirectory, of path: String, limits: PublishLimits
    ) -> Result<Checked, Refusal> {
        guard let directory = root.subdirectory(key) else { return .failure(.notADirectory) }
        guard let owner = writer(of: directory, in: root, path: path) else { return .failure(.ownerUnreadable) }
        let names = directory.names()
        let groups = names.filter(GroupRelocation.isGroupFile).sorted()
        guard !groups.isEmpty else { return .failure(.noGroupFile) }
        var files = Set(groups)
        for group in groups {
            if let problem = EntryName.problem(group) { return .failure(.badName(problem)) }
            let data: Data
            do { data = try directory.openFile(group, owner: owner, limit: limits.limit(for: group)).readAll() } catch {
                return .failure(.unreadable(file: group, error))
            }
            guard let children = Self.children(ofGroup: data) else { return .failure(.notAGroupFile(group)) }
            for child in children {
                if let problem = EntryName.problem(child) { return .failure(.badChildName(group: group, problem)) }
            }
            files.formUnion(children)
        }
        var bytes: Int64 = 0
        for file in files {
            switch directory.kind(of: file, owner: owner) {
            case .missing: return .failure(.missing(file: file))
            case .refused(let failure): return .failure(.unreadable(file: file, failure))
            case .empty: return .failure(.empty(file: file))
            case .other: return .failure(.unreadable(file: file, .notRegular))
            case .regular(let size):
                let limit = limits.limit(for: file)
                guard size <= limit else {
                    return .failure(.unreadable(file: file, .tooLarge(size: size, limit: limit)))
                }
                bytes += size
            }
        }
        return .success(Checked(files: files.sorted(), bytes: bytes, owner: owner))
    }

    /// Whose kernels an entry holds: its upper's owner (a per-user upper belongs to its uid, root's to uid 0), or,
    /// in the shared upper that every user writes, the owner of the entry's directory, who made it.
    static func writer(of entry: UpperDirectory, in upper: UpperDirectory, path: String) -> UInt32? {
        let shared = (path as NSString).lastPathComponent == OverlayFileSystem.upperName(isolation: .shared, uid: 0)
        return shared ? entry.owner : upper.owner
    }

    /// The child names of a Triton 3.x group file (`{"child_paths": {name: absolute path}}`).
    static func children(ofGroup data: Data) -> [String]? {
        guard let document = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
            let children = document["child_paths"] as? [String: Any], !children.isEmpty
        else { return nil }
        return Array(children.keys)
    }

    // MARK: Staging

    /// Copies the entries into `directory` (created, mode 0700), a Triton cache of their own, with each group
    /// file's child paths naming `canonicalRoot`, so the same kernels make the same image whichever node and
    /// mountpoint they were compiled on. An entry that changed since the scan so that it no longer checks, or
    /// that fails to copy, is left out (and its partial copy removed); once `limits.publishBytes` are staged, the
    /// entries that would pass it are left for a later publish.
    /// - Throws: only when the staging directory itself cannot be made.
    public func stage(into directory: String, canonicalRoot: String) throws -> Staged {
        guard mkdir(directory, 0o700) == 0 else { throw PublishingError.io(operation: "mkdir", path: directory, errno) }
        var staged = Staged()
        var total: Int64 = 0
        for entry in entries {
            let path = entry.upper + "/" + entry.key
            guard let upper = UpperDirectory(path: entry.upper),
                case .success(let checked) = Self.check(entry.key, in: upper, of: entry.upper, limits: limits),
                let source = upper.subdirectory(entry.key)
            else { continue }
            let (files, bytes) = (checked.files, checked.bytes)
            guard total + bytes <= limits.publishBytes else {
                staged.skipped.append(
                    Skipped(
                        path: path,
                        reason: "left for a later publish: this one holds \(total) bytes, and \(bytes) more would "
                            + "pass its limit of \(limits.publishBytes) (--max-publish-size)"))
                continue
            }
            let target = directory + "/" + entry.key
            do {
                guard mkdir(target, 0o755) == 0 else {
                    throw PublishingError.io(operation: "mkdir", path: target, errno)
                }
                var copied: Int64 = 0
                for file in files {
                    copied += try Self.copy(
                        file, of: entry.key, from: source, owner: checked.owner, to: target,
                        limit: limits.limit(for: file), canonicalRoot: canonicalRoot)
                }
                total += copied
                staged.entries.append(Entry(key: entry.key, upper: entry.upper, files: files, bytes: copied))
            } catch {
                try? FileManager.default.removeItem(atPath: target)
                staged.skipped.append(Skipped(path: path, reason: "not staged: \(error)"))
            }
        }
        return staged
    }

    /// Copies one file of an entry, streamed (a group file, small and bounded, is rewritten to name `root`).
    /// - Returns: the bytes written.
    static func copy(
        _ file: String, of key: String, from source: UpperDirectory, owner: UInt32, to target: String, limit: Int64,
        canonicalRoot root: String
    ) throws -> Int64 {
        let path = target + "/" + file
        let opened = try source.openFile(file, owner: owner, limit: limit)
        if GroupRelocation.isGroupFile(file) {
            let data = canonicalGroup(try opened.readAll(), key: key, root: root)
            let out = try StagedFile(creating: path, executable: false)
            try data.withUnsafeBytes { try out.write($0) }
            return Int64(data.count)
        }
        let out = try StagedFile(creating: path, executable: false)
        var written: Int64 = 0
        try opened.stream { chunk in
            try out.write(chunk)
            written += Int64(chunk.count)
        }
        guard written > 0 else { throw Refusal.emptyNow(file: file) }
        if opened.isExecutable { try out.setExecutable(true) }
        return written
    }

    /// A group file naming `root`, in one byte form (sorted keys, no spaces) whether or not its paths changed:
    /// Triton writes its own form, the rewrite another, and the bytes are part of the image digest.
    static func canonicalGroup(_ data: Data, key: String, root: String) -> Data {
        if let rewritten = GroupRelocation.rewrite(data, directory: key, root: root) { return rewritten }
        guard let document = try? JSONSerialization.jsonObject(with: data),
            let canonical = try? JSONSerialization.data(
                withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return data }
        return canonical
    }
}
