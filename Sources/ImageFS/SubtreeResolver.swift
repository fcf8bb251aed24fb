import Foundation
import LayerArchive
import OCI

/// Decides what one top-level directory of the cache root shows: the kernels whose targets the host accepts, each
/// KEY whole from the first rank of images that has it, withheld where images of that rank disagree on it
/// (`KeyOwnership`), group files relocated. It reads kernel metadata and group files, so a mount runs it on the
/// first lookup of that directory rather than for every directory at mount time.
struct SubtreeResolver: Sendable {
    /// What one image has under a top-level directory (paths relative to the cache root, the directory included).
    struct Contribution: Sendable {
        /// The image's place in the mount's merge order: the first rank that has a KEY gives it.
        var precedence: Precedence
        /// The image's name (what a mount's hot set is recorded per).
        var image: String
        var backends: Set<GPUTarget.Backend>
        /// In layer order, kept as a list since most are never resolved; a path a layer lists twice is taken
        /// from its last entry.
        var entries: [(path: String, file: LayerFile)]

        var files: [String: LayerFile] { Dictionary(entries, uniquingKeysWith: { _, last in last }) }
    }

    /// One path of a resolved subtree, with the bytes mcvfs serves instead of the blob when it rewrote the file.
    struct Entry {
        var path: String
        var file: LayerFile
        var rewritten: Data?
    }

    /// What a resolution decided.
    struct Resolution {
        /// Sorted by path, parents first.
        var entries: [Entry]
        /// Who gives each KEY of the name now, the KEYs given before included.
        var ownership: KeyOwnership
        /// Images that hold other bytes for a KEY than the image that gives it, or than a peer of their rank.
        var conflicts: [KeyOwnership.Conflict]
    }

    let options: ImageTreeBuilder.Options
    let readBlob: @Sendable (Digest) throws -> Data

    /// The visible entries under a top-level directory in sorted path order (parents first, missing ones
    /// synthesised); empty when every kernel in it is for another GPU.
    /// - Parameters:
    ///   - contributions: in precedence order.
    ///   - ownership: the KEYs given already (by an earlier resolution of the name): they take nothing new.
    ///   - report: counts kernels shown, hidden and group files relocated.
    func resolve(
        _ contributions: [Contribution], ownership: KeyOwnership = KeyOwnership(),
        report: inout ImageTreeBuilder.Report
    ) throws -> Resolution {
        var ownership = ownership
        let claimants = try contributions.map { contribution in
            var files = contribution.files
            for hidden in try hiddenDirectories(in: files, backends: contribution.backends, report: &report) {
                let prefix = hidden + "/"
                files = files.filter { $0.key != hidden && !$0.key.hasPrefix(prefix) }
            }
            return KeyOwnership.Claimant(
                image: contribution.image, rank: contribution.precedence.rank, files: files)
        }
        let (taken, conflicts) = ownership.claim(claimants)
        var paths = taken
        for path in Array(paths.keys) {
            var parent = Self.split(path).directory
            while !parent.isEmpty, paths[parent] == nil {
                paths[parent] = LayerFile(kind: .directory, permissions: 0o755, size: 0, modified: 0)
                parent = Self.split(parent).directory
            }
        }
        let entries = try paths.keys.sorted().map { path in
            let file = paths[path]!
            var entry = Entry(path: path, file: file, rewritten: nil)
            let (directory, name) = Self.split(path)
            if case .file(let digest) = file.kind, Relocation.applies(to: name),
                let rewritten = Relocation.rewrite(
                    try readBlob(digest), name: name, directory: directory, root: options.consumerRoot)
            {
                entry.rewritten = rewritten
                report.groupFilesRelocated += 1
            }
            return entry
        }
        return Resolution(entries: entries, ownership: ownership, conflicts: conflicts)
    }

    /// Kernel directories for targets the filter refuses, and driver-helper directories of another backend.
    private func hiddenDirectories(
        in files: [String: LayerFile], backends imageBackends: Set<GPUTarget.Backend>,
        report: inout ImageTreeBuilder.Report
    ) throws -> [String] {
        var byDirectory: [String: [String: LayerFile]] = [:]
        for (path, file) in files {
            let (directory, name) = Self.split(path)
            byDirectory[directory, default: [:]][name] = file
        }
        var hidden: [String] = []
        for (directory, entries) in byDirectory where !directory.isEmpty {
            let kernels = entries.keys.filter(GroupRelocation.isGroupFile).map {
                String($0.dropFirst("__grp__".count))
            }
            var targets: [GPUTarget] = []
            for metadataName in kernels {
                if case .file(let digest)? = entries[metadataName]?.kind,
                    let target = try? KernelMetadata(json: try readBlob(digest)).target
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

    /// Adds read and search permission for everyone when the mount is shared (`worldReadable`).
    func directoryPermissions(_ mode: UInt32) -> UInt32 {
        let base = mode & 0o777
        return options.worldReadable ? base | 0o555 : base
    }

    /// The files a resolution reads, to fetch them together beforehand: kernel metadata and group files (what the
    /// eStargz writer puts in one run of the layer) and the other files relocation rewrites.
    static func metadata(of contributions: [Contribution]) -> [Digest] {
        contributions.flatMap { contribution in
            contribution.entries.compactMap { path, file -> Digest? in
                guard case .file(let digest) = file.kind else { return nil }
                return EStargzWriter.isTreeMetadata(path) || Relocation.applies(to: split(path).name) ? digest : nil
            }
        }
    }

    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }
}
