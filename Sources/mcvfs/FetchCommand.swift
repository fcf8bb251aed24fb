import ArgumentParser
import Foundation

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
            let request = try LeasedCatalog(
                reference, command: "fetch", global: global, gpu: gpu, tritonVersion: tritonVersion, trust: trust,
                recording: .record)
            if let warning = request.catalog.nothingSelectedWarning(selection: request.selection.description) {
                Log.warning(warning)
            }
            _ = try request.layers.indexUsedImages { image, layer in
                print("\(image.name)\t\(layer.digest)\t\(layer.size)")
            }
            for entry in request.catalog.skipped { Log.info("skipped \(entry.name): \(entry.skipReason ?? "")") }
        }
    }
}
