import ArgumentParser
import Foundation
import Glibc
import ImageFS
import LayerArchive
import NodeService

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Copy a mount's merged view (or only what was written to it) into a standalone cache directory.",
        discussion: """
            The copy is what the calling user sees through the mount, with group files relocated to DIR (as \
            `mcvfs extract` writes them), so Triton hits from DIR after the mount is gone: point TRITON_CACHE_DIR \
            (or VLLM_CACHE_ROOT) at DIR itself. With --upper-only it holds only the kernels written through the \
            mount by the calling user (or the shared upper), ready for `mcvfs push`.

            --hot-set FILE writes the names of the <KEY>/ directories the mount's readers opened a file under, in \
            first-open order (every image's, or one image's with --image): give it to the next `mcvfs push \
            --hot-set` so the next node's first lookup fetches them all in one request.
            """)

    @Flag(help: "Only the caller's upper: kernels compiled on this node, not those from the images.")
    var upperOnly = false

    @Option(help: ArgumentHelp("Write the hot set the mount recorded to this file.", valueName: "file"))
    var hotSet: String?

    @Option(help: "With --hot-set: only the names this image (tag) provides.")
    var image: String?

    @Argument(help: "An mcvfs mountpoint.") var mountpoint: String
    @Argument(help: "Destination directory (created; must be empty if it exists).") var directory: String?

    func validate() throws {
        if directory == nil && hotSet == nil {
            throw ValidationError("give a destination DIR, --hot-set FILE, or both")
        }
        if image != nil && hotSet == nil { throw ValidationError("--image selects the hot set of --hot-set") }
    }

    func run() throws {
        do {
            if let hotSet { try writeHotSet(to: hotSet) }
            guard let directory else { return }
            let source = try upperOnly ? upperDirectory() : URL(fileURLWithPath: mountpoint).standardizedFileURL.path
            let destination = URL(fileURLWithPath: directory).standardizedFileURL.path
            let manager = FileManager.default
            if manager.fileExists(atPath: destination), !(try manager.contentsOfDirectory(atPath: destination)).isEmpty
            {
                throw Failure.notEmpty(destination)
            }
            try manager.createDirectory(atPath: destination, withIntermediateDirectories: true)
            let copied = try copyTree(from: source, to: destination, root: destination)
            print("exported \(copied.files) file(s) to \(destination), \(copied.relocated) relocated to it")
        } catch {
            reportError(error)
            throw ExitCode.failure
        }
    }

    /// Why an export stops; `description` is its error line.
    enum Failure: Error, Equatable, CustomStringConvertible {
        /// The destination exists and holds something.
        case notEmpty(String)
        /// The mountpoint lacks a control file an mcvfs mount has (`missing` says which).
        case notAMount(String, missing: String)
        case readOnly(mountpoint: String)
        /// `--image` names an image none of whose files were opened (`recorded`: the images that have a hot set).
        case imageNotOpened(String, recorded: [String])
        /// A system call on `path` failed.
        case io(Operation, path: String, errno: Int32)

        enum Operation: String {
            case open, stat, create, chmod, write
            case read = "read for"
        }

        var description: String {
            switch self {
            case .notEmpty(let path): return "\(path) is not empty"
            case .notAMount(let mountpoint, let missing): return "\(mountpoint) is not an mcvfs mount (\(missing))"
            case .readOnly(let mountpoint): return "\(mountpoint) is mounted read-only: it has no upper"
            case .imageNotOpened(let image, let recorded):
                return
                    "no file of image \(image) was opened (images with a hot set: \(recorded.joined(separator: ", ")))"
            case .io(let operation, let path, let code):
                return "cannot \(operation.rawValue) \(path): \(String(cString: strerror(code)))"
            }
        }
    }

    /// Writes the recorded hot set (all images', or `image`'s) in the form `push --hot-set` reads.
    private func writeHotSet(to path: String) throws {
        let control = URL(fileURLWithPath: mountpoint).standardizedFileURL.path + "/" + ImageFileSystem.controlName
        let text: String
        if let image {
            guard let data = try? WholeFile.read(control + "/" + ImageFileSystem.HotSetFiles.json).get(),
                let byImage = try? JSONDecoder().decode([String: [String]].self, from: data)
            else { throw Failure.notAMount(mountpoint, missing: "no recorded hot set") }
            guard let names = byImage[image] else {
                throw Failure.imageNotOpened(image, recorded: byImage.keys.sorted())
            }
            text = HotSet(names).text
        } else {
            guard let data = try? WholeFile.read(control + "/" + ImageFileSystem.HotSetFiles.text).get()
            else { throw Failure.notAMount(mountpoint, missing: "no recorded hot set") }
            text = String(decoding: data, as: UTF8.self)
        }
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        let count = text.split(separator: "\n").count
        print("wrote a hot set of \(count) entr\(count == 1 ? "y" : "ies") to \(path)")
    }

    /// The caller's upper directory, as the mount's status names it.
    private func upperDirectory() throws -> String {
        let statusPath = MountStatus.file(in: URL(fileURLWithPath: mountpoint).standardizedFileURL.path)
        guard let data = try? WholeFile.read(statusPath).get(), let status = try? MountStatus.decode(data)
        else { throw Failure.notAMount(mountpoint, missing: "no .mcvfs/status.json") }
        guard let upper = status.upper(of: getuid()) else { throw Failure.readOnly(mountpoint: mountpoint) }
        return upper
    }

    /// Copies regular files, directories and symlinks; skips mcvfs' own markers and Triton's temp directories.
    /// Files that name absolute paths (group files) are rewritten to name `root`, the copy's own root: the mount
    /// served them naming the mountpoint, which is gone once it is unmounted.
    ///
    /// The source is a tree users write to (through the mount, as any uid), and export may run as root: it is
    /// walked by descriptor (`DirectoryDescriptor`: each entry opened `O_NOFOLLOW` relative to its checked
    /// directory, a file copied only when what was opened is a regular file), so an entry swapped for a link
    /// between listing and copying is never followed to a file of the host. Files stream in chunks: memory stays
    /// bounded whatever their size.
    private func copyTree(from source: String, to destination: String, root: String) throws -> (
        files: Int, relocated: Int
    ) {
        try copyTree(from: try DirectoryDescriptor.open(source), to: destination, root: root, relative: "")
    }

    private func copyTree(from source: DirectoryDescriptor, to destination: String, root: String, relative: String)
        throws -> (files: Int, relocated: Int)
    {
        let manager = FileManager.default
        var copied = (files: 0, relocated: 0)
        for name in try source.entries().sorted() {
            if name == ImageFileSystem.controlName || OverlayFileSystem.isBookkeeping(name)
                || name.hasPrefix("tmp.pid_")
            {
                continue
            }
            let to = destination + "/" + name
            guard let info = source.status(name) else { continue }  // gone since listed
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                // nil: swapped for something else since fstatat; skipped like any entry that is not a directory.
                guard let inner = try source.directory(name) else { continue }
                try manager.createDirectory(atPath: to, withIntermediateDirectories: false)
                let done = try copyTree(
                    from: inner, to: to, root: root, relative: relative.isEmpty ? name : relative + "/" + name)
                copied = (copied.files + done.files, copied.relocated + done.relocated)
            case S_IFLNK:
                guard let target = source.readLink(name) else { continue }
                try manager.createSymbolicLink(atPath: to, withDestinationPath: target)
            case S_IFREG:
                let file: Int32
                switch source.openFile(name, flags: O_RDONLY) {
                case .success(let fd): file = fd
                case .failure(let error) where error.code == EINVAL || error.code == ELOOP || error.code == ENOENT:
                    continue  // no longer a regular file: never followed, never copied
                case .failure(let error):
                    throw Failure.io(.open, path: "\(source.path)/\(name)", errno: error.code)
                }
                defer { close(file) }
                if try copyFile(file, name: name, to: to, root: root, relative: relative) { copied.relocated += 1 }
                copied.files += 1
            default:
                continue
            }
        }
        return copied
    }

    /// Copies open regular file `file` to new file `to` with its permissions, relocating it when its name says so
    /// and it is small enough to relocate (`Relocation.inputLimit`; a larger one is copied as it is, as the mount
    /// serves it). Returns whether it was relocated.
    private func copyFile(_ file: Int32, name: String, to: String, root: String, relative: String) throws -> Bool {
        var info = stat()
        guard fstat(file, &info) == 0 else { throw Failure.io(.stat, path: to, errno: errno) }
        let out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw Failure.io(.create, path: to, errno: errno) }
        defer { close(out) }
        var relocated = false
        if Relocation.applies(to: name), info.st_size <= Relocation.inputLimit,
            let data = try Self.read(file, limit: Relocation.inputLimit, for: to)
        {
            let rewritten = Relocation.rewrite(data, name: name, directory: relative, root: root)
            relocated = rewritten != nil
            try (rewritten ?? data).withUnsafeBytes { bytes in try Self.write(bytes, to: out, at: 0, path: to) }
        } else {
            try Self.stream(file, to: out, path: to)
        }
        guard fchmod(out, info.st_mode & 0o7777) == 0 else { throw Failure.io(.chmod, path: to, errno: errno) }
        return relocated
    }

    /// All of `file` when it holds at most `limit` bytes; nil when it holds more (it grew since its `fstat`).
    private static func read(_ file: Int32, limit: Int, for path: String) throws -> Data? {
        var data = Data(count: limit + 1)
        var total = 0
        while total < data.count {
            let n = data.withUnsafeMutableBytes { pread(file, $0.baseAddress! + total, $0.count - total, off_t(total)) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Failure.io(.read, path: path, errno: errno) }
            if n == 0 { break }
            total += n
        }
        return total > limit ? nil : data.prefix(total)
    }

    /// Copies `file` to `out` one chunk at a time.
    private static func stream(_ file: Int32, to out: Int32, path: String) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var offset: off_t = 0
        while true {
            let n = pread(file, buffer.baseAddress!, buffer.count, offset)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Failure.io(.read, path: path, errno: errno) }
            if n == 0 { return }
            try write(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), to: out, at: offset, path: path)
            offset += off_t(n)
        }
    }

    private static func write(_ bytes: UnsafeRawBufferPointer, to out: Int32, at offset: off_t, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(out, bytes.baseAddress! + done, bytes.count - done, offset + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Failure.io(.write, path: path, errno: errno) }
            done += n
        }
    }
}
