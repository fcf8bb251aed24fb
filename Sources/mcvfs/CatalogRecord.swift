import ContentHash
import Foundation
import OCI

/// The catalog of the last successful mount of a reference, so a remount can serve from the local cache with
/// the same pinned digests while the registry is unreachable.
struct CatalogRecord {
    let root: URL

    private func file(reference: String, selection: String) -> URL {
        let key = SHA256Hasher.digest(Data("\(reference)\n\(selection)".utf8)).hex
        return root.appendingPathComponent("catalogs/\(key).json")
    }

    func save(_ catalog: Catalog, selection: String) throws {
        let url = file(reference: catalog.reference, selection: selection)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try JSONEncoder().encode(catalog).write(to: url, options: .atomic)
    }

    func load(reference: String, selection: String) -> Catalog? {
        guard let data = try? Data(contentsOf: file(reference: reference, selection: selection)) else { return nil }
        return try? JSONDecoder().decode(Catalog.self, from: data)
    }
}
