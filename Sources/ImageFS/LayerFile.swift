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
    /// - Returns: path (relative, no leading slash) to entry.
    static func flatten(_ layers: [LayerIndex]) -> [String: LayerFile] {
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
                case .directory:
                    files[path] = LayerFile(kind: .directory, permissions: entry.mode, size: 0, modified: entry.mtime)
                case .file:
                    guard let content = entry.content else { continue }
                    files[path] = LayerFile(
                        kind: .file(content), permissions: entry.mode, size: entry.size, modified: entry.mtime)
                case .symlink:
                    files[path] = LayerFile(
                        kind: .symlink(entry.linkTarget ?? ""), permissions: 0o777,
                        size: Int64((entry.linkTarget ?? "").utf8.count), modified: entry.mtime)
                case .hardlink:
                    guard let target = entry.linkTarget.map(normalised), let source = files[target] else { continue }
                    files[path] = source
                }
                added.insert(path)
            }
        }
        return files
    }

    private static func normalised(_ path: String) -> String {
        var p = Substring(path)
        while p.hasPrefix("./") { p = p.dropFirst(2) }
        while p.hasPrefix("/") { p = p.dropFirst() }
        return String(p)
    }
}
