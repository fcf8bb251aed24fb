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
    @Flag(help: "Print JSON: {\"images\": [{\"name\", \"digest\", \"layers\": [{\"digest\", \"size\"}]}]}.")
    var json = false
    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String

    struct Output: Encodable {
        struct Image: Encodable {
            var name: String
            var digest: String
            var layers: [Layer]
        }

        struct Layer: Encodable {
            var digest: String
            var size: Int64
        }

        var images: [Image] = []
    }

    func run() throws {
        try runReportingErrors(global) {
            let request = try LeasedCatalog(
                reference, command: "fetch", global: global, gpu: gpu, tritonVersion: tritonVersion, trust: trust,
                recording: .record)
            if let warning = request.catalog.nothingSelectedWarning(selection: request.selection.description) {
                Log.warning(warning)
            }
            var output = Output()
            let bar = ProgressBar(label: "fetch")
            let total = (
                layers: request.catalog.used.reduce(0) { $0 + $1.layers.count },
                bytes: request.catalog.used.reduce(Int64(0)) { $0 + $1.size }
            )
            var done = (layers: 0, bytes: Int64(0))
            defer { bar.finish() }
            _ = try request.layers.indexUsedImages { image, layer in
                done = (done.layers + 1, done.bytes + layer.size)
                bar.update(bytes: done.bytes, totalBytes: total.bytes, blobs: done.layers, totalBlobs: total.layers)
                if !json { print("\(image.name)\t\(layer.digest)\t\(layer.size)") }
                if output.images.last?.digest != image.digest.description {
                    output.images.append(.init(name: image.name, digest: image.digest.description, layers: []))
                }
                output.images[output.images.count - 1].layers.append(
                    .init(digest: layer.digest.description, size: layer.size))
            }
            if json { try printJSON(output) }
            for entry in request.catalog.skipped { Log.info("skipped \(entry.name): \(entry.skipReason ?? "")") }
        }
    }
}
