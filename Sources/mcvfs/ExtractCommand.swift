import ArgumentParser
import Foundation
import ImageFS
import MountService
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

    @Flag(help: "Print JSON: what was extracted, from which images, and what was skipped.") var json = false
    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String
    @Argument(help: "The directory to write the cache into (created when missing).") var directory: String

    struct Output: Encodable {
        var directory: String
        var images: [ImageOutput]
        var kernels: Int
        var files: Int
        var bytes: Int64
        var skippedKernels: Int
        var skippedImages: [String]
        var keptPaths: [String]
    }

    func run() throws {
        try runReportingErrors(global) {
            let request = try LeasedCatalog(
                reference, command: "extract", global: global, gpu: gpu, tritonVersion: tritonVersion, trust: trust,
                recording: .none)
            let (catalog, selection, layers) = (request.catalog, request.selection, request.layers)
            if let warning = catalog.nothingSelectedWarning(selection: selection.description) {
                Log.warning(warning)
            } else {
                for entry in catalog.skipped { Log.warning("skipped image \(entry.name): \(entry.skipReason ?? "")") }
            }
            let target = URL(fileURLWithPath: directory).standardizedFileURL.path
            var builder = ImageTreeBuilder(
                options: .init(consumerRoot: target, filter: selection.kernelFilter, worldReadable: false),
                readBlob: { try layers.bytes(of: $0).data() })
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
            let report = try TreeExporter(tree: tree, source: { try layers.bytes(of: $0) })
                .export(into: target) { written in bar.update(bytes: written, totalBytes: total) }
            bar.finish()
            let built = tree.report
            if built.kernelsHidden > 0 {
                Log.warning("skipped \(built.kernelsHidden) kernel(s) for GPUs other than \(selection.description)")
            }
            for conflict in built.conflicts ?? [] {
                let outcome = conflict.served.map { "extracted \($0)'s copy" } ?? "extracted neither copy"
                Log.warning("\(conflict): \(outcome) (docs/fleet.md, \"Precedence\")")
            }
            for path in report.kept { Log.info("kept existing \(path)") }
            if !report.kept.isEmpty {
                Log.warning("left \(report.kept.count) path(s) already in \(target) as they were")
            }
            if json {
                try printJSON(
                    Output(
                        directory: target,
                        images: catalog.entries.compactMap { entry in
                            entry.isUsed ? ImageOutput(name: entry.name, digest: entry.digest?.description ?? "") : nil
                        },
                        kernels: built.kernelsShown, files: report.files, bytes: report.bytes,
                        skippedKernels: built.kernelsHidden, skippedImages: catalog.skipped.map(\.name),
                        keptPaths: report.kept))
                return
            }
            print(
                "extracted \(built.kernelsShown) kernel(s) from \(catalog.used.count) image(s) into \(target): "
                    + "\(report.files) files, \(formatBytes(report.bytes)); skipped \(built.kernelsHidden) kernel(s) "
                    + "for other GPUs, \(catalog.skipped.count) image(s), \(report.kept.count) existing path(s)")
        }
    }
}
