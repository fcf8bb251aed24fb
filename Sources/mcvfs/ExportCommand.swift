import ArgumentParser
import Foundation
import Glibc
import ImageFS
import NodeService
import TarIndex

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
                throw ExportError(description: "\(destination) is not empty")
            }
            try manager.createDirectory(atPath: destination, withIntermediateDirectories: true)
            let copied = try copyTree(from: source, to: destination, root: destination, relative: "")
            print("exported \(copied.files) file(s) to \(destination), \(copied.relocated) relocated to it")
        } catch {
            reportError(error)
            throw ExitCode.failure
        }
    }

    struct ExportError: Error, CustomStringConvertible {
        let description: String
    }

    /// Writes the recorded hot set (all images', or `image`'s) in the form `push --hot-set` reads.
    private func writeHotSet(to path: String) throws {
        let control = URL(fileURLWithPath: mountpoint).standardizedFileURL.path + "/" + ImageFileSystem.controlName
        let text: String
        if let image {
            guard let data = FileManager.default.contents(atPath: control + "/" + ImageFileSystem.HotSetFiles.json),
                let byImage = try? JSONDecoder().decode([String: [String]].self, from: data)
            else { throw ExportError(description: "\(mountpoint) is not an mcvfs mount (no recorded hot set)") }
            guard let names = byImage[image] else {
                throw ExportError(
                    description: "no file of image \(image) was opened (images with a hot set: "
                        + "\(byImage.keys.sorted().joined(separator: ", ")))")
            }
            text = HotSet(names).text
        } else {
            guard let data = FileManager.default.contents(atPath: control + "/" + ImageFileSystem.HotSetFiles.text)
            else { throw ExportError(description: "\(mountpoint) is not an mcvfs mount (no recorded hot set)") }
            text = String(decoding: data, as: UTF8.self)
        }
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        let count = text.split(separator: "\n").count
        print("wrote a hot set of \(count) entr\(count == 1 ? "y" : "ies") to \(path)")
    }

    /// The caller's upper directory, as the mount's status names it.
    private func upperDirectory() throws -> String {
        let statusPath = MountStatus.file(in: URL(fileURLWithPath: mountpoint).standardizedFileURL.path)
        guard let data = FileManager.default.contents(atPath: statusPath), let status = try? MountStatus.decode(data)
        else { throw ExportError(description: "\(mountpoint) is not an mcvfs mount (no .mcvfs/status.json)") }
        guard let upper = status.upper(of: getuid()) else {
            throw ExportError(description: "\(mountpoint) is mounted read-only: it has no upper")
        }
        return upper
    }

    /// Copies regular files, directories and symlinks; skips mcvfs' own markers and Triton's temp directories.
    /// Files that name absolute paths (group files) are rewritten to name `root`, the copy's own root: the mount
    /// served them naming the mountpoint, which is gone once it is unmounted.
    private func copyTree(from source: String, to destination: String, root: String, relative: String) throws -> (
        files: Int, relocated: Int
    ) {
        let manager = FileManager.default
        var copied = (files: 0, relocated: 0)
        for name in try manager.contentsOfDirectory(atPath: source).sorted() {
            if name == ImageFileSystem.controlName || OverlayFileSystem.isBookkeeping(name)
                || name.hasPrefix("tmp.pid_")
            {
                continue
            }
            let from = source + "/" + name
            let to = destination + "/" + name
            let attributes = try manager.attributesOfItem(atPath: from)
            switch attributes[.type] as? FileAttributeType {
            case .typeDirectory?:
                try manager.createDirectory(atPath: to, withIntermediateDirectories: false)
                let inner = try copyTree(
                    from: from, to: to, root: root, relative: relative.isEmpty ? name : relative + "/" + name)
                copied = (copied.files + inner.files, copied.relocated + inner.relocated)
            case .typeSymbolicLink?:
                try manager.createSymbolicLink(
                    atPath: to, withDestinationPath: try manager.destinationOfSymbolicLink(atPath: from))
            case .typeRegular?:
                guard var data = manager.contents(atPath: from) else {
                    throw ExportError(description: "cannot read \(from)")
                }
                if Relocation.applies(to: name),
                    let rewritten = Relocation.rewrite(data, name: name, directory: relative, root: root)
                {
                    data = rewritten
                    copied.relocated += 1
                }
                try data.write(to: URL(fileURLWithPath: to), options: .atomic)
                if let permissions = attributes[.posixPermissions] as? Int {
                    chmod(to, mode_t(permissions))
                }
                copied.files += 1
            default:
                continue
            }
        }
        return copied
    }
}
