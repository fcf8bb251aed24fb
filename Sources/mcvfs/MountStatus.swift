import CacheRepository
import Foundation
import ImageFS
import OCI
import Synchronization

/// `/.mcvfs/status.json`: what the mount uses and skips, and what fetching has cost and found.
struct MountStatus: Encodable {
    struct Source: Sendable {
        var reference: String
        var mountpoint: String
        var consumerRoot: String
        var selection: String
        var catalog: Catalog
        var metrics: FetchMetrics
        var fileSystem: ImageFileSystem
        var upperRoot: String?
        var isolation: String?
        /// The writable overlay, when there is one: its live inodes and open files.
        var overlay: OverlayFileSystem? = nil
        /// Node-service state (cache bound, lease, mirror, FUSE errors); nil when not wired.
        var service: (@Sendable () -> ServiceStatus)? = nil
    }

    struct Upper: Encodable {
        var name: String
        var bytes: Int64
        var files: Int
    }

    struct Image: Encodable {
        var name: String
        var digest: String?
        var targets: [String]?
        var layers: [String]?
        var reason: String?
        /// Under a signature policy: who signed the image.
        var signedBy: [String]? = nil
    }

    var reference: String
    var mountpoint: String
    var consumerRoot: String
    var pid: Int32
    var gpus: String
    var loaded: Bool
    var used: [Image]
    var skipped: [Image]
    var tree: ImageTreeBuilder.Report?
    var fetch: FetchMetrics.Snapshot
    var upperRoot: String?
    var isolation: String?
    var uppers: [Upper]
    var overlay: OverlayFileSystem.Report?
    var service: ServiceStatus?

    init(_ source: Source) {
        reference = source.reference
        mountpoint = source.mountpoint
        consumerRoot = source.consumerRoot
        pid = getpid()
        gpus = source.selection
        loaded = source.fileSystem.isLoaded
        used = source.catalog.entries.filter(\.isUsed).map {
            Image(
                name: $0.name, digest: $0.digest?.description, targets: $0.targets?.map(\.description),
                layers: $0.image?.layers.map(\.digest.description), reason: nil, signedBy: $0.signedBy)
        }
        skipped = source.catalog.skipped.map {
            Image(
                name: $0.name, digest: $0.digest?.description, targets: $0.targets?.map(\.description), layers: nil,
                reason: $0.skipReason)
        }
        tree = source.fileSystem.report
        fetch = source.metrics.snapshot
        service = source.service?()
        upperRoot = source.upperRoot
        isolation = source.isolation
        uppers = source.upperRoot.map(Self.uppers(in:)) ?? []
        overlay = source.overlay?.report
    }

    /// Size of each upper (one per uid, or `shared`), work files included.
    static func uppers(in root: String) -> [Upper] {
        let manager = FileManager.default
        return ((try? manager.contentsOfDirectory(atPath: root)) ?? []).sorted().map { name in
            var bytes: Int64 = 0
            var files = 0
            let enumerator = manager.enumerator(atPath: root + "/" + name)
            while let path = enumerator?.nextObject() as? String {
                guard let attributes = enumerator?.fileAttributes,
                    attributes[.type] as? FileAttributeType == .typeRegular
                else { continue }
                if (path as NSString).lastPathComponent.hasPrefix(".wh.") { continue }
                bytes += (attributes[.size] as? Int64) ?? Int64((attributes[.size] as? Int) ?? 0)
                files += 1
            }
            return Upper(name: name, bytes: bytes, files: files)
        }
    }
}

/// Holds the status source once the mount is wired; the filesystem renders through it on every open.
final class StatusBox: Sendable {
    private let source = Mutex<MountStatus.Source?>(nil)

    func set(_ value: MountStatus.Source) { source.withLock { $0 = value } }

    func render() -> Data {
        guard let current = source.withLock({ $0 }) else { return Data("{}\n".utf8) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return ((try? encoder.encode(MountStatus(current))) ?? Data("{}".utf8)) + Data("\n".utf8)
    }
}
