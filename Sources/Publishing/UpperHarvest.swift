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
/// Uppers are written by users (by other uids when root publishes them), so nothing in them is followed: every
/// directory and file is opened with `O_NOFOLLOW` relative to its parent's descriptor, and a symlink or special
/// file refuses its entry. `stage` copies what is taken into a private directory first; the image is built from
/// that copy, never from the upper, so nothing can change between the checks and the build.
public struct UpperHarvest: Sendable {
    public struct Entry: Sendable, Hashable {
        public var key: String
        /// The upper directory the entry is in.
        public var upper: String
        /// The group files and the children they name, sorted.
        public var files: [String]
    }

    public struct Skipped: Sendable, Hashable, Codable {
        public var path: String
        public var reason: String
    }

    public var entries: [Entry]
    /// Entries not taken, and why (entries left out because they are known are not listed).
    public var skipped: [Skipped]

    /// Scans each upper's top-level directories.
    /// - Parameter isKnown: keys left out without a look: those the mount's images provide and those published
    ///   before.
    public init(uppers: [String], leavingOut isKnown: (String) -> Bool) {
        var entries: [Entry] = []
        var skipped: [Skipped] = []
        for upper in uppers {
            guard let root = Directory(path: upper) else { continue }  // a uid that never wrote has no upper
            for name in root.names() where !OverlayFileSystem.isBookkeeping(name) && !isKnown(name) {
                let path = upper + "/" + name
                if let reason = Self.ignoredReason(name) {
                    skipped.append(Skipped(path: path, reason: reason))
                    continue
                }
                switch Self.check(name, in: root) {
                case .success(let files): entries.append(Entry(key: name, upper: upper, files: files))
                case .failure(let refusal): skipped.append(Skipped(path: path, reason: refusal.reason))
                }
            }
        }
        // The first upper that has a key wins it, as the uppers are given.
        var seen = Set<String>()
        self.entries = entries.filter { seen.insert($0.key).inserted }
        self.skipped = skipped
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

    struct Refusal: Error {
        var reason: String
    }

    /// The files of a complete entry, or why it is not one.
    static func check(_ key: String, in root: Directory) -> Result<[String], Refusal> {
        guard let directory = root.subdirectory(key) else {
            return .failure(Refusal(reason: "not a directory (a Triton cache holds <KEY>/ directories)"))
        }
        let names = directory.names()
        let groups = names.filter(GroupRelocation.isGroupFile).sorted()
        guard !groups.isEmpty else {
            return .failure(Refusal(reason: "no group file yet (an entry being written, or a driver helper)"))
        }
        var files = Set(groups)
        for group in groups {
            guard let data = directory.contents(of: group), let children = Self.children(ofGroup: data) else {
                return .failure(Refusal(reason: "\(group) is not a Triton group file"))
            }
            files.formUnion(children)
        }
        for file in files {
            guard !file.isEmpty, file != ".", file != "..", !file.contains("/") else {
                return .failure(Refusal(reason: "a group file names '\(file)', which is not a file of the entry"))
            }
            switch directory.kind(of: file) {
            case .missing: return .failure(Refusal(reason: "incomplete: \(file) is missing"))
            case .empty: return .failure(Refusal(reason: "incomplete: \(file) is empty (still being written)"))
            case .other: return .failure(Refusal(reason: "refused: \(file) is not a regular file"))
            case .regular: continue
            }
        }
        return .success(files.sorted())
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
    /// mountpoint they were compiled on.
    /// - Returns: the entries copied; one that changed since the scan so that it no longer checks is left out.
    public func stage(into directory: String, canonicalRoot: String) throws -> [Entry] {
        guard mkdir(directory, 0o700) == 0 else { throw PublishingError.io(operation: "mkdir", path: directory, errno) }
        var staged: [Entry] = []
        for entry in entries {
            guard let upper = Directory(path: entry.upper), case .success(let files) = Self.check(entry.key, in: upper),
                let source = upper.subdirectory(entry.key)
            else { continue }
            let target = directory + "/" + entry.key
            guard mkdir(target, 0o755) == 0 else { throw PublishingError.io(operation: "mkdir", path: target, errno) }
            var complete = true
            for file in files {
                guard var data = source.contents(of: file), !data.isEmpty else {
                    complete = false
                    break
                }
                if GroupRelocation.isGroupFile(file) {
                    data = Self.canonicalGroup(data, key: entry.key, root: canonicalRoot)
                }
                try Self.write(data, to: target + "/" + file, executable: source.isExecutable(file))
            }
            if complete {
                staged.append(Entry(key: entry.key, upper: entry.upper, files: files))
            } else {
                try? FileManager.default.removeItem(atPath: target)
            }
        }
        return staged
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

    static func write(_ data: Data, to path: String, executable: Bool) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, executable ? 0o755 : 0o644)
        guard fd >= 0 else { throw PublishingError.io(operation: "create", path: path, errno) }
        defer { close(fd) }
        try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw PublishingError.io(operation: "write", path: path, errno) }
                offset += n
            }
        }
    }
}

/// A directory opened without following links; its entries are read relative to its descriptor.
final class Directory {
    enum Kind {
        case missing, empty, regular, other
    }

    let fd: Int32

    init?(path: String) {
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 { return nil }
    }

    private init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    func subdirectory(_ name: String) -> Directory? {
        let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        return child < 0 ? nil : Directory(fd: child)
    }

    /// Entry names, `.` and `..` left out.
    func names() -> [String] {
        let copy = dup(fd)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            return []
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    func kind(of name: String) -> Kind {
        var info = stat()
        guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return .missing }
        guard info.st_mode & S_IFMT == S_IFREG else { return .other }
        return info.st_size == 0 ? .empty : .regular
    }

    func isExecutable(_ name: String) -> Bool {
        var info = stat()
        return fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 && info.st_mode & 0o111 != 0
    }

    /// The bytes of a regular file (nil for anything else: a link, a device, a FIFO, which `O_NONBLOCK` keeps
    /// from blocking the open).
    func contents(of name: String) -> Data? {
        let file = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard file >= 0 else { return nil }
        defer { close(file) }
        var info = stat()
        guard fstat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(file, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { return data }
            data.append(buffer, count: n)
        }
    }
}
