import ArgumentParser
import Foundation
import NodeService
import OCI

struct CacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache", abstract: "Inspect and prune the local blob cache.",
        subcommands: [CacheListCommand.self, CachePruneCommand.self])
}

/// Options of the cache subcommands: where the cache is, and logging.
struct CacheOptions: ParsableArguments {
    @OptionGroup var cache: CacheDirectoryOptions

    /// The cache's janitor, leases of dead processes removed.
    func janitor() throws -> CacheJanitor {
        try NodeCache(layout: try cache.layout()).janitor
    }
}

struct CacheListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List cached blobs: layer, file or other; size; last use; whether a lease holds it.")

    @OptionGroup var options: CacheOptions
    @Flag(help: "Print JSON.") var json = false

    struct Output: Encodable {
        struct Blob: Encodable {
            var digest: String
            var kind: CacheJanitor.Inventory.Kind
            var size: Int64
            var lastAccess: Date
            var live: Bool
        }

        var directory: String
        var totalSize: Int64
        var blobs: [Blob]
        var indexedLayers: [String]
        var leases: [Lease]
    }

    func run() throws {
        try reportingErrors {
            let janitor = try options.janitor()
            let inventory = try janitor.leases.withLock { try janitor.inventory() }
            let (kinds, protected) = (inventory.kinds, inventory.protected)
            let blobs = inventory.blobs.sorted { ($0.lastAccess, $0.digest) > ($1.lastAccess, $1.digest) }.map {
                Output.Blob(
                    digest: $0.digest.description, kind: kinds[$0.digest] ?? .blob, size: $0.size,
                    lastAccess: $0.lastAccess, live: protected.contains($0.digest))
            }
            let output = Output(
                directory: janitor.store.root.path, totalSize: inventory.totalSize, blobs: blobs,
                indexedLayers: inventory.indexes.keys.sorted().map(\.description), leases: inventory.leases)
            if json {
                let encoder = JSONEncoder()
                encoder.dateEncodingStrategy = .iso8601
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(output), as: UTF8.self))
                return
            }
            let dates = ISO8601DateFormatter()
            var rows = [["DIGEST", "KIND", "SIZE", "LAST USED", "LIVE"]]
            for blob in blobs {
                rows.append([
                    blob.digest, blob.kind.rawValue, formatBytes(blob.size), dates.string(from: blob.lastAccess),
                    blob.live ? "yes" : "no",
                ])
            }
            printColumns(rows)
            print(
                "\n\(blobs.count) blob(s), \(formatBytes(output.totalSize)) in \(output.directory); "
                    + "\(inventory.indexes.count) indexed layer(s); \(inventory.leases.count) lease(s) held")
            for lease in inventory.leases {
                print("  \(lease.holder) (pid \(lease.pid)): \(lease.reference)")
            }
        }
    }
}

struct CachePruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Evict cached layers no running mount needs, least recently used first.",
        discussion: """
            A layer goes as a unit: its index, its blob and the file blobs no other kept layer names. Blobs a \
            running mount holds (its lease in <cache>/leases) are never removed.
            """)

    @OptionGroup var options: CacheOptions
    @Flag(help: "Remove everything no running mount holds.") var all = false
    @Option(help: "Evict until the cache is at most this big (e.g. 2G).") var maxSize: String?

    func validate() throws {
        guard all != (maxSize != nil) else { throw ValidationError("give exactly one of --all and --max-size") }
        if let maxSize { _ = try parsedSize(maxSize) }
    }

    func run() throws {
        try reportingErrors {
            let bound = try maxSize.map(parsedSize) ?? 0
            let plan = try options.janitor().enforce(maxSize: bound)
            print(
                "removed \(plan.removeIndexes.count) layer index(es) and \(plan.removeBlobs.count) blob(s), "
                    + "\(formatBytes(plan.sizeBefore - plan.sizeAfter)); \(formatBytes(plan.sizeAfter)) left")
            if plan.overBound {
                FileHandle.standardError.write(
                    Data(
                        "mcvfs: warning: running mounts hold \(formatBytes(plan.sizeAfter)), more than the bound\n".utf8
                    ))
            }
        }
    }
}

private func reportingErrors(_ body: () throws -> Void) throws {
    Log.configure(level: .warning, stderr: true, file: nil, syslog: false, terminal: true)
    do {
        try body()
    } catch let error as ValidationError {
        throw error
    } catch {
        reportError(error)
        throw ExitCode.failure
    }
}
