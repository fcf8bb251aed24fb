import Foundation
import OCI

/// What a compacted image merged, and when: two labels of its config, read by later compactions to remove the
/// merged tags once `--keep-for` has passed. Kept in the image itself, so the record is exactly as trustworthy as
/// the image (signed with it), travels with it, and needs no store of its own.
public struct MergeRecord: Sendable, Hashable {
    /// `[{"repository": "registry/name", "tag": ..., "digest": "sha256:..."}]`, sorted.
    public static let mergedLabel = "io.mcvfs.fleet/merged"
    /// RFC 3339, UTC.
    public static let mergedAtLabel = "io.mcvfs.fleet/merged-at"

    public struct Source: Sendable, Hashable, Codable, Comparable {
        public var repository: String
        public var tag: String
        public var digest: Digest

        public init(repository: String, tag: String, digest: Digest) {
            self.repository = repository
            self.tag = tag
            self.digest = digest
        }

        public static func < (a: Source, b: Source) -> Bool {
            (a.repository, a.tag, a.digest.description) < (b.repository, b.tag, b.digest.description)
        }
    }

    public var sources: [Source]
    public var mergedAt: Date

    public init(sources: [Source], mergedAt: Date) {
        self.sources = sources.sorted()
        self.mergedAt = mergedAt
    }

    /// The record in `labels`; nil when the image is not a compaction.
    /// - Throws: `PublishingError.malformedRecord` when the labels are there but unreadable.
    public init?(labels: [String: String], image: String) throws(PublishingError) {
        guard let merged = labels[Self.mergedLabel] else { return nil }
        guard let sources = try? JSONDecoder().decode([Source].self, from: Data(merged.utf8)) else {
            throw .malformedRecord(image: image, reason: "\(Self.mergedLabel) is not a list of merged images")
        }
        guard let text = labels[Self.mergedAtLabel], let date = ISO8601DateFormatter().date(from: text) else {
            throw .malformedRecord(image: image, reason: "\(Self.mergedAtLabel) is not an RFC 3339 time")
        }
        self.init(sources: sources, mergedAt: date)
    }

    /// The two labels.
    public var labels: [String: String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // A list of strings only: this cannot fail.
        let merged = String(decoding: try! encoder.encode(sources), as: UTF8.self)
        return [Self.mergedLabel: merged, Self.mergedAtLabel: Self.timestamp(mergedAt)]
    }

    /// RFC 3339 in UTC, to the second: what the label holds and the config's `created` says.
    public static func timestamp(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }
}
