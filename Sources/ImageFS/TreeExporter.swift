import BlobCache
import ContentHash
import Foundation
import OCI

#if canImport(Glibc)
    import Glibc
#endif

/// Writes an `ImageTree` (the merged, GPU-filtered, relocated tree a mount serves) into a real directory: the
/// `extract` command, so extraction and mounting share one filter and one group-file relocation.
///
/// Never writes outside the directory: everything is created relative to directory descriptors, with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` (so no existing file or symlink is written through), first into a fresh staging
/// directory inside the target, then moved into place entry by entry: directories with `renameat` when absent,
/// files and symlinks with `linkat`, which never replaces. What already exists is left untouched and reported
/// (a Triton cache is content-addressed by key, so an existing entry of the same name is the same kernel).
/// File contents are hashed while copied and checked against their digests.
public struct TreeExporter {
    public struct Report: Sendable, Hashable {
        /// What was written into the target (not counting what was kept).
        public var files = 0
        public var directories = 0
        public var symlinks = 0
        public var bytes: Int64 = 0
        /// Paths that already existed in the target and were kept as they were.
        public var kept: [String] = []
    }

    private let tree: ImageTree
    private let source: (Digest) throws -> FileBytes

    /// - Parameter source: where the verified bytes of a content digest are (`LayerProvider.bytes(of:)`).
    public init(tree: ImageTree, source: @escaping (Digest) throws -> FileBytes) {
        self.tree = tree
        self.source = source
    }

    /// Exports the tree into `directory`, created when missing.
    /// - Parameter progress: called with the bytes written so far.
    public func export(into directory: String, progress: (Int64) -> Void = { _ in }) throws -> Report {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let target = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard target >= 0 else { throw ExportError.io(operation: "open", path: directory, errno: errno) }
        defer { close(target) }
        let stagingName = ".mcvfs-extract-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdirat(target, stagingName, 0o700) == 0 else {
            throw ExportError.io(operation: "mkdir", path: directory + "/" + stagingName, errno: errno)
        }
        defer { try? FileManager.default.removeItem(atPath: directory + "/" + stagingName) }
        let staging = openat(target, stagingName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard staging >= 0 else { throw ExportError.io(operation: "open", path: stagingName, errno: errno) }
        defer { close(staging) }
        try tree.resolveAll()
        guard let root = tree.node(tree.rootIno) else { return Report() }

        var report = Report()
        var written: Int64 = 0
        try write(children: root, into: staging, path: directory, report: &report) { n in
            written += n
            progress(written)
        }
        try merge(children: root, from: staging, into: target, path: "", report: &report)
        return report
    }

    private static func checkName(_ name: String, in path: String) throws {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.contains("\0") else {
            throw ExportError.invalidName(path + "/" + name)
        }
    }

    private func write(
        children node: ImageTree.Node, into fd: Int32, path: String, report: inout Report, progress: (Int64) -> Void
    ) throws {
        for name in node.listing {
            try Self.checkName(name, in: path)
            guard let childIno = node.children[name], let child = tree.node(childIno) else { continue }
            let childPath = path + "/" + name
            switch child.kind {
            case .directory:
                guard mkdirat(fd, name, 0o700) == 0 else {
                    throw ExportError.io(operation: "mkdir", path: childPath, errno: errno)
                }
                let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw ExportError.io(operation: "open", path: childPath, errno: errno) }
                defer { close(sub) }
                try write(children: child, into: sub, path: childPath, report: &report, progress: progress)
                fchmod(sub, mode_t(child.permissions & 0o777 | 0o700))
                report.directories += 1
            case .symlink:
                guard let target = child.linkTarget, symlinkat(target, fd, name) == 0 else {
                    throw ExportError.io(operation: "symlink", path: childPath, errno: errno)
                }
                report.symlinks += 1
            case .file:
                let out = openat(fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard out >= 0 else { throw ExportError.io(operation: "create", path: childPath, errno: errno) }
                defer { close(out) }
                switch child.content {
                case .bytes(let data):
                    try data.withUnsafeBytes { try Self.writeAll(out, $0, path: childPath) }
                    progress(Int64(data.count))
                case .blob(let digest):
                    try copy(digest, to: out, path: childPath, progress: progress)
                case nil:
                    break
                }
                // Permission bits only, never setuid/setgid; the owner can always read what it extracted.
                fchmod(out, mode_t(child.permissions & 0o777 | 0o600))
                report.files += 1
                report.bytes += child.size
            }
        }
    }

    /// Copies a content into `out`, hashing it on the way: bytes that no longer match their digest fail.
    private func copy(_ digest: Digest, to out: Int32, path: String, progress: (Int64) -> Void) throws {
        var hasher = SHA256Hasher()
        func put(_ chunk: UnsafeRawBufferPointer, _ hasher: inout SHA256Hasher) throws {
            hasher.update(chunk)
            try Self.writeAll(out, chunk, path: path)
            progress(Int64(chunk.count))
        }
        let found: FileBytes
        do { found = try source(digest) } catch {
            throw ExportError.contentUnavailable(digest: digest.short, path: path, reason: "\(error)")
        }
        switch found {
        case .held(let data): try data.withUnsafeBytes { try put($0, &hasher) }
        case .mapped(let region): try put(region.bytes, &hasher)
        case .stored(let file):
            let input = open(file, O_RDONLY | O_CLOEXEC)
            guard input >= 0 else { throw ExportError.io(operation: "open", path: file, errno: errno) }
            defer { close(input) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let n = read(input, buffer.baseAddress, buffer.count)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ExportError.io(operation: "read", path: file, errno: errno)
                }
                if n == 0 { break }
                try put(UnsafeRawBufferPointer(rebasing: buffer[..<n]), &hasher)
            }
        }
        let actual = hasher.finalize()
        guard actual == digest else {
            throw ExportError.digestMismatch(path: path, expected: digest.description, actual: actual.description)
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw ExportError.io(operation: "write", path: path, errno: errno)
            }
            offset += n
        }
    }

    /// Moves what was staged into the target without replacing anything that is there.
    private func merge(
        children node: ImageTree.Node, from source: Int32, into target: Int32, path: String, report: inout Report
    ) throws {
        for name in node.listing {
            guard let childIno = node.children[name], let child = tree.node(childIno) else { continue }
            let childPath = path.isEmpty ? name : path + "/" + name
            var info = stat()
            let exists = fstatat(target, name, &info, AT_SYMLINK_NOFOLLOW) == 0
            if child.kind == .directory {
                if !exists {
                    if renameat(source, name, target, name) == 0 { continue }
                    guard errno == EEXIST || errno == ENOTEMPTY else {
                        throw ExportError.io(operation: "rename", path: childPath, errno: errno)
                    }
                    guard fstatat(target, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                        throw ExportError.io(operation: "stat", path: childPath, errno: errno)
                    }
                }
                guard info.st_mode & S_IFMT == S_IFDIR else {
                    report.kept.append(childPath)
                    continue
                }
                let from = openat(source, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                let to = openat(target, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                defer {
                    if from >= 0 { close(from) }
                    if to >= 0 { close(to) }
                }
                guard from >= 0, to >= 0 else { throw ExportError.io(operation: "open", path: childPath, errno: errno) }
                try merge(children: child, from: from, into: to, path: childPath, report: &report)
            } else {
                // linkat never replaces: an existing name (file, symlink, anything) is kept.
                if linkat(source, name, target, name, 0) != 0 {
                    guard errno == EEXIST else {
                        throw ExportError.io(operation: "link", path: childPath, errno: errno)
                    }
                    report.kept.append(childPath)
                    if child.kind == .file {
                        report.files -= 1
                        report.bytes -= child.size
                    } else {
                        report.symlinks -= 1
                    }
                }
            }
        }
    }
}
