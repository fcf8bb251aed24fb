extension LayerIndex {
    /// Applies `layers` bottom to top with OCI whiteout semantics (`.wh.<name>` deletes a lower path,
    /// `.wh..wh..opq` empties a lower directory) and resolves hard links to their target: what a container
    /// runtime would extract, as directories, files and symlinks (a hard link becomes a file with its target's
    /// content, size and mode).
    /// - Returns: path and entry, in the layer's order when there is one layer with neither whiteouts nor hard links
    ///   (the common case, with no table to build), else in no particular order.
    public static func flatten(_ layers: [LayerIndex]) -> [(path: String, entry: TarEntry)] {
        let needsTable =
            layers.count != 1
            || layers[0].entries.contains {
                $0.kind == .whiteout || $0.kind == .opaqueWhiteout || $0.kind == .hardlink
            }
        if !needsTable {
            return layers[0].entries.compactMap { $0.kind.isShown ? ($0.path, $0) : nil }
        }
        var files: [String: TarEntry] = [:]
        for layer in layers {
            var added = Set<String>()
            for entry in layer.entries {
                let path = entry.path
                switch entry.kind {
                case .whiteout, .opaqueWhiteout:
                    // A whiteout comes as the path it deletes, an opaque one as the directory it empties.
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
                    var file = source
                    file.path = path
                    files[path] = file
                default:
                    files[path] = entry
                }
                added.insert(path)
            }
        }
        return files.map { ($0.key, $0.value) }
    }

    private static func normalised(_ path: String) -> String {
        var p = Substring(path)
        while p.hasPrefix("./") { p = p.dropFirst(2) }
        while p.hasPrefix("/") { p = p.dropFirst() }
        return String(p)
    }
}

extension TarEntry.Kind {
    /// Directories, files and symlinks: what a flattened layer stack holds.
    var isShown: Bool { self == .directory || self == .file || self == .symlink }
}
