import ArgumentParser
import CacheRepository
import Foundation
import OCI

struct FetchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract:
            "Download and verify the layers of the images a mount would use into the local cache (pre-warm a node).")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var gpu: GPUOptions
    @OptionGroup var tritonVersion: TritonVersionOptions
    @OptionGroup var trust: TrustOptions
    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String

    func run() throws {
        try runReportingErrors(global) {
            let request = try CatalogRequest(
                reference, global: global, gpu: gpu, tritonVersion: tritonVersion, trust: trust, record: true)
            let (ref, client, store, catalog) = (request.reference, request.client, request.store, request.catalog)
            let fetcher = try LayerFetcher(
                client: client, repository: ref.repository, store: store, metrics: FetchMetrics())
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
