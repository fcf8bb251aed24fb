import OCI
import TarIndex

/// One entry of an image after its layers were applied: the unit the tree builder works on.
struct LayerFile: Sendable, Hashable {
    enum Kind: Sendable, Hashable {
        case directory
        case file(Digest)
        case symlink(String)
    }

    var kind: Kind
    var permissions: UInt32
    var size: Int64
    var modified: Int64
}

extension LayerFile {
    /// Applies `layers` bottom to top with OCI whiteout semantics (`.wh.<name>` deletes a lower path,
    /// `.wh..wh..opq` empties a lower directory) and resolves hard links to their target's content.
    /// - Returns: path (relative, no leading slash) and entry, in the layer's order when there is one layer with
    ///   neither whiteouts nor hard links (the common case, with no table to build), else in no particular order.
    static func flatten(_ layers: [LayerIndex]) -> [(path: String, file: LayerFile)] {
        let needsTable =
            layers.count != 1
            || layers[0].entries.contains {
                $0.kind == .whiteout || $0.kind == .opaqueWhiteout || $0.kind == .hardlink
            }
        if !needsTable {
            return layers[0].entries.compactMap { entry in LayerFile(entry).map { (entry.path, $0) } }
        }
        var files: [String: LayerFile] = [:]
        for layer in layers {
            var added = Set<String>()
            for entry in layer.entries {
                let path = entry.path
                switch entry.kind {
                case .whiteout, .opaqueWhiteout:
                    // TarIndex gives a whiteout as the path it deletes, an opaque one as the directory it empties.
                    let opaque = entry.kind == .opaqueWhiteout
                    let prefix = path.isEmpty ? "" : path + "/"
                    // A whiteout hides what lower layers had; what this layer itself added stays.
                    for existing in files.keys
                    where !added.contains(existing)
                        && (existing.hasPrefix(prefix) || (!opaque && existing == path))
                    {
                        files[existing] = nil
                    }
                    continue
                case .hardlink:
                    guard let target = entry.linkTarget.map(normalised), let source = files[target] else { continue }
                    files[path] = source
                default:
                    guard let file = LayerFile(entry) else { continue }
                    files[path] = file
                }
                added.insert(path)
            }
        }
        return files.map { ($0.key, $0.value) }
    }

    /// A directory, file or symlink entry as the tree shows it; nil for other kinds and for a file without content.
    private init?(_ entry: TarEntry) {
        switch entry.kind {
        case .directory:
            self.init(kind: .directory, permissions: entry.mode, size: 0, modified: entry.mtime)
        case .file:
            guard let content = entry.content else { return nil }
            self.init(kind: .file(content), permissions: entry.mode, size: entry.size, modified: entry.mtime)
        case .symlink:
            let target = entry.linkTarget ?? ""
            self.init(
                kind: .symlink(target), permissions: 0o777, size: Int64(target.utf8.count), modified: entry.mtime)
        default:
            return nil
        }
    }

    private static func normalised(_ path: String) -> String {
        var p = Substring(path)
        while p.hasPrefix("./") { p = p.dropFirst(2) }
        while p.hasPrefix("/") { p = p.dropFirst() }
        return String(p)
    }
}
