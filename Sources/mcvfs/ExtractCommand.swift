import ArgumentParser
import Foundation
import ImageFS
import OCI

struct ExtractCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "Write the kernels of a cache image (or repository) that suit the selected GPUs into a directory.",
        discussion: """
            The no-FUSE fallback, and the equivalent of MCV's -e: the same images, kernel filter and group-file \
            relocation as `mcvfs mount`, written to DIR instead of served. Group files name DIR as the cache root, \
            so point TRITON_CACHE_DIR (or VLLM_CACHE_ROOT) at DIR itself. Every byte is checked against its digest. \
            Nothing is written outside DIR and nothing already in DIR is replaced; what was skipped is reported.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var gpu: GPUOptions
    @OptionGroup var tritonVersion: TritonVersionOptions
    @OptionGroup var trust: TrustOptions

    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String
    @Argument(help: "The directory to write the cache into (created when missing).") var directory: String

    func run() throws {
        try runReportingErrors(global) {
            let request = try LeasedCatalog(
                reference, command: "extract", global: global, gpu: gpu, tritonVersion: tritonVersion, trust: trust,
                recording: .none)
            let (catalog, selection, layers) = (request.catalog, request.selection, request.layers)
            for entry in catalog.skipped { Log.warning("skipped image \(entry.name): \(entry.skipReason ?? "")") }
            guard !catalog.used.isEmpty else {
                let reasons = catalog.skipped.map { "\($0.name): \($0.skipReason ?? "")" }.joined(separator: "; ")
                throw ExtractError.nothingToExtract(reference: request.reference.description, reasons: reasons)
            }
            let target = URL(fileURLWithPath: directory).standardizedFileURL.path
            var builder = ImageTreeBuilder(
                options: .init(consumerRoot: target, filter: selection.kernelFilter, worldReadable: false),
                readBlob: { try layers.contents(of: $0) })
            let bar = ProgressBar(label: "extract")
            let totalLayers = catalog.used.reduce(0) { $0 + $1.layers.count }
            let totalLayerBytes = catalog.used.reduce(Int64(0)) { $0 + $1.size }
            var fetchedBytes: Int64 = 0
            var fetchedLayers = 0
            for (image, indexes) in try layers.indexUsedImages(progress: { _, layer in
                fetchedBytes += layer.size
                fetchedLayers += 1
                bar.update(
                    bytes: fetchedBytes, totalBytes: totalLayerBytes, blobs: fetchedLayers, totalBlobs: totalLayers)
            }) {
                builder.add(layers: indexes, image: image)
                Log.info("using \(image.name) \(image.digest.short)")
            }
            let tree = builder.build(rootIno: 1, firstIno: 16)
            try tree.resolveAll()  // filtered and relocated, so the progress total is what will be written
            let total = tree.totalFileBytes
            let report = try TreeExporter(tree: tree, source: { try layers.source(of: $0) })
                .export(into: target) { written in bar.update(bytes: written, totalBytes: total) }
            bar.finish()
            let built = tree.report
            if built.kernelsHidden > 0 {
                Log.warning("skipped \(built.kernelsHidden) kernel(s) for GPUs other than \(selection.description)")
            }
            for conflict in built.conflicts ?? [] {
                Log.warning("\(conflict): extracted the first image's copy (docs/fleet.md, \"Precedence\")")
            }
            for path in report.kept { Log.info("kept existing \(path)") }
            if !report.kept.isEmpty {
                Log.warning("left \(report.kept.count) path(s) already in \(target) as they were")
            }
            print(
                "extracted \(built.kernelsShown) kernel(s) from \(catalog.used.count) image(s) into \(target): "
                    + "\(report.files) files, \(formatBytes(report.bytes)); skipped \(built.kernelsHidden) kernel(s) "
                    + "for other GPUs, \(catalog.skipped.count) image(s), \(report.kept.count) existing path(s)")
        }
    }
}

enum ExtractError: Error, CustomStringConvertible {
    case nothingToExtract(reference: String, reasons: String)

    var description: String {
        switch self {
        case .nothingToExtract(let ref, let reasons):
            return "no image of \(ref) can be extracted for the selected GPUs"
                + (reasons.isEmpty ? "" : " (\(reasons))")
        }
    }
}
