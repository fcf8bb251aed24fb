import BlobCache
import ContentHash
import Foundation
import OCI

/// The catalog each reference and GPU selection last resolved to (`catalogs/<key>.json`), so a remount can serve
/// the same pinned digests from the local cache while the registry is unreachable, or `--offline`.
public struct CatalogRecords: Sendable {
    public let directory: String

    public init(layout: CacheLayout) {
        directory = layout.catalogs
    }

    /// One file per reference and selection: the same tags may resolve to other images for other GPUs.
    func file(reference: String, selection: String) -> String {
        let key = SHA256Hasher.digest(Data("\(reference)\n\(selection)".utf8)).hex
        return directory + "/\(key).json"
    }

    /// Records `catalog` (under its own `reference`), replacing the file atomically.
    public func save(_ catalog: Catalog, selection: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let url = URL(fileURLWithPath: file(reference: catalog.reference, selection: selection))
        try JSONEncoder().encode(catalog).write(to: url, options: .atomic)
    }

    /// The recorded catalog; nil when there is none or it cannot be read (a record is a convenience, never a
    /// reason to fail).
    public func load(reference: String, selection: String) -> Catalog? {
        guard let data = FileManager.default.contents(atPath: file(reference: reference, selection: selection)) else {
            return nil
        }
        return try? JSONDecoder().decode(Catalog.self, from: data)
    }
}
