import LayerArchive
import OCI

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
    /// The layers applied bottom to top (`LayerIndex.flatten`: OCI whiteouts, hard links resolved), as the tree's
    /// entries; in the layer's order for one plain layer, else in no particular order.
    static func flatten(_ layers: [LayerIndex]) -> [(path: String, file: LayerFile)] {
        LayerIndex.flatten(layers).compactMap { item in LayerFile(item.entry).map { (item.path, $0) } }
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
}
