import ArgumentParser
import BlobCache
import Foundation
import NodeService
import OCI

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List the cache images of a repository and whether this host can use them.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var gpu: GPUOptions
    @OptionGroup var tritonVersion: TritonVersionOptions
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "REGISTRY/REPOSITORY (a tag or digest narrows it to one image).") var repository: String

    func run() throws {
        try runReportingErrors(global) {
            let reference = try ImageReference(parsing: repository)
            let selection = try gpu.resolveForListing()
            let layout = try global.cache.layout()
            let catalog = try CatalogService(
                upstream: Upstream(reference: reference, origin: try global.client(for: reference), log: .process),
                store: try DirectoryBlobStore(layout: layout), records: CatalogRecords(layout: layout),
                recording: .none
            ).resolve(selection, narrow: tritonVersion.apply)
            if json {
                try printJSON(ListOutput(catalog))
            } else {
                printTable(catalog)
            }
        }
    }

    private func printTable(_ catalog: Catalog) {
        var rows = [["TAG", "DIGEST", "TARGETS", "COMPATIBLE", "SIZE"]]
        for entry in catalog.entries where entry.image != nil || entry.digest != nil {
            rows.append([
                entry.name, entry.digest?.short ?? "-", entry.targets?.map(\.description).joined(separator: ",") ?? "?",
                entry.isUsed ? "yes" : "no", entry.image.map { formatBytes($0.size) } ?? "-",
            ])
        }
        printColumns(rows)
        let skipped = catalog.entries.filter { $0.image == nil }
        if !skipped.isEmpty {
            print("\nskipped:")
            for entry in skipped { print("  \(entry.name): \(entry.skipReason ?? "")") }
        }
    }
}

/// The JSON form of `mcvfs ls`.
struct ListOutput: Encodable {
    struct Image: Encodable {
        /// What `status` calls the image too: the tag, `tag[n]` for an index's n-th manifest.
        var name: String
        /// The same as `name`; kept for scripts written before `name`.
        var tag: String
        var digest: String
        var mediaType: String
        var targets: [String]
        var compatible: Bool
        var size: Int64
        var kinds: [String]
        /// From `model.cache.image/triton-version`; nil when the image does not say.
        var tritonVersions: [String]?
        var reason: String?
    }

    struct Skipped: Encodable {
        var name: String
        var tag: String
        var digest: String?
        var reason: String
    }

    var repository: String
    var images: [Image]
    var skipped: [Skipped]

    init(_ catalog: Catalog) {
        repository = catalog.repository
        images = catalog.entries.compactMap { entry in
            guard let image = entry.image else { return nil }
            return Image(
                name: entry.name, tag: entry.name, digest: image.digest.description, mediaType: entry.mediaType ?? "",
                targets: (entry.targets ?? []).map(\.description), compatible: entry.isUsed, size: image.size,
                kinds: entry.kinds.map(\.rawValue), tritonVersions: image.cacheLabels.tritonVersions?.sorted(),
                reason: entry.skipReason)
        }
        // Images a host could use with other GPUs are listed above with compatible: false; skipped holds what
        // is not a usable cache image at all (signatures, plain images, unreadable manifests).
        skipped = catalog.entries.filter { $0.image == nil }.map {
            Skipped(name: $0.name, tag: $0.name, digest: $0.digest?.description, reason: $0.skipReason ?? "")
        }
    }
}
