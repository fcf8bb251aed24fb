import Foundation
import OCI

/// The order in which this node first used each image of a reference (`catalogs/<key>.seen.json`): batch 0 for
/// the images of its first mount, then one batch per later mount or refresh that used new ones.
///
/// A mount ranks images by it (`Precedence`): an image this node has not used before ranks after every image it
/// has, so a tag pushed while the node was away (`0`, or a mutable tag moved to other content) only adds KEYs on
/// a remount, as it would have through a live refresh, and never changes a KEY the node served. A node without a
/// record (its first mount) has no history to go by: there, tag order decides among base images.
///
/// A record is a safeguard, never a reason to fail: one that cannot be read or written is logged and counts as
/// none.
public struct FirstSeen: Sendable {
    struct Record: Codable, Equatable {
        var batches: [[Digest]]
    }

    let file: String
    let log: NodeLog

    /// - Parameters:
    ///   - reference: the reference as the user gave it; with `selection`, the same key as the recorded catalog.
    public init(records: CatalogRecords, reference: String, selection: String, log: NodeLog = .silent) {
        file = String(records.file(reference: reference, selection: selection).dropLast(".json".count)) + ".seen.json"
        self.log = log
    }

    /// Each image's batch, recording those never used before as a new batch (after the mount's first, which takes
    /// every image). Images the record holds but `images` lacks are dropped from it, when `pruning`: a tag that
    /// comes back is then new again, which only ranks it lower.
    public func batches(of images: [CacheImage], pruning: Bool) -> [Digest: Int] {
        var record = load() ?? Record(batches: [])
        let update = Self.assign(images.map(\.digest), to: &record, pruning: pruning)
        if update.changed { save(record) }
        return update.batches
    }

    /// The pure rule of `batches(of:pruning:)`.
    static func assign(
        _ digests: [Digest], to record: inout Record, pruning: Bool
    ) -> (batches: [Digest: Int], changed: Bool) {
        let before = record
        if pruning {
            let current = Set(digests)
            record.batches = record.batches.map { $0.filter(current.contains) }
        }
        var batchOf: [Digest: Int] = [:]
        for (batch, members) in record.batches.enumerated() {
            for digest in members where batchOf[digest] == nil { batchOf[digest] = batch }
        }
        var new: [Digest] = []
        for digest in digests where batchOf[digest] == nil && !new.contains(digest) { new.append(digest) }
        if !new.isEmpty {
            // The first mount's images are batch 0; empty batches keep their place, so no image moves up.
            for digest in new { batchOf[digest] = record.batches.count }
            record.batches.append(new)
        }
        return (batchOf.filter { digests.contains($0.key) }, record != before)
    }

    private func load() -> Record? {
        guard let data = FileManager.default.contents(atPath: file) else { return nil }
        do { return try JSONDecoder().decode(Record.self, from: data) } catch {
            log.warning("cannot read \(file) (\(error)): every image of this mount ranks as seen first now")
            return nil
        }
    }

    private func save(_ record: Record) {
        do {
            try FileManager.default.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try JSONEncoder().encode(record).write(to: URL(fileURLWithPath: file), options: .atomic)
        } catch {
            log.warning(
                "cannot record the images this node used in \(file) (a remount ranks new tags as base): \(error)")
        }
    }
}
