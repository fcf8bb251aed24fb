import ArgumentParser
import CacheRepository
import Foundation
import OCI

struct FetchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Download and verify the layers of the images a mount would use into the local cache (pre-warm a node).")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var gpu: GPUOptions
    @OptionGroup var trust: TrustOptions
    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String

    func run() throws {
        try runReportingErrors(global) {
            let ref = try ImageReference(parsing: reference)
            let selection = try gpu.resolve()
            let client = try global.client(for: ref)
            let store = try global.store()
            var catalog = try ImageResolver(client: client, store: store)
                .catalog(for: ref, accepts: selection.accepts, selectionDescription: selection.description)
            // Recorded like a mount's, so a later `mount --offline` can resolve tags to what was fetched.
            try? CatalogRecord(root: try global.cacheRoot()).save(catalog, selection: selection.description)
            try trust.enforce(on: &catalog, reference: ref, client: client)
            let fetcher = try LayerFetcher(client: client, repository: ref.repository, store: store, metrics: FetchMetrics())
            for image in catalog.used {
                for layer in image.layers {
                    _ = try fetcher.index(of: layer)
                    print("\(image.name)\t\(layer.digest)\t\(layer.size)")
                }
            }
            for entry in catalog.skipped { Log.info("skipped \(entry.name): \(entry.skipReason ?? "")") }
        }
    }
}
