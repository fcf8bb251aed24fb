import BlobCache
import ContentHash
import Foundation

/// What each upper has published to a repository, kept in the cache directory (`published/`), so a publish takes
/// only the kernels compiled since the last one (a publish that found nothing new pushes nothing).
///
/// One record per (repository, upper) pair, written atomically after the image that holds its keys is tagged: a
/// publish that fails or is interrupted records nothing, and the next one builds the same image again (the same
/// digest: the blobs already pushed are not sent twice). Every publish to a repository from this cache directory
/// holds the repository's lock file for its whole run, so a daemon's periodic publish and a `mcvfs publish` by hand
/// never race on a record.
public struct PublishLedger: Sendable {
    public struct Record: Codable, Sendable, Equatable {
        public var repository: String
        public var upper: String
        /// Key → the tag of the image that holds it.
        public var keys: [String: String]
    }

    let layout: CacheLayout
    public let repository: String

    public init(layout: CacheLayout, repository: String) {
        self.layout = layout
        self.repository = repository
    }

    /// Runs `body` holding the repository's publish lock.
    public func withLock<R>(_ body: () throws -> R) throws -> R {
        try AtomicFile.makeDirectory(layout.published)
        return try FileLock.withExclusive(path: layout.published + "/" + Self.name(repository) + ".lock", body)
    }

    /// The keys `upper` published to the repository (empty when it published nothing yet).
    public func record(of upper: String) -> Record {
        let empty = Record(repository: repository, upper: upper, keys: [:])
        guard let data = FileManager.default.contents(atPath: path(of: upper)),
            let record = try? JSONDecoder().decode(Record.self, from: data),
            record.repository == repository, record.upper == upper
        else { return empty }
        return record
    }

    /// Adds `keys` (published under `tag`) to `upper`'s record. Call under `withLock`.
    public func record(_ keys: [String], tag: String, from upper: String) throws {
        var record = record(of: upper)
        for key in keys { record.keys[key] = tag }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.write(try encoder.encode(record), to: path(of: upper))
    }

    func path(of upper: String) -> String {
        layout.published + "/" + Self.name(repository + "\n" + upper) + ".json"
    }

    static func name(_ text: String) -> String { SHA256Hasher.digest(Data(text.utf8)).hex }
}
