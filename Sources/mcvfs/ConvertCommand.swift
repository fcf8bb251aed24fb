import ArgumentParser
import BlobCache
import Foundation
import ImageBuilder
import LayerArchive
import NodeService
import OCI

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Rewrite a cache image as eStargz, with the same files and labels, so mounts fetch it lazily.",
        discussion: """
            SRC is any cache image mcvfs can mount: tar, gzip or zstd layers, OCI or Docker, one layer or several \
            (applied with their whiteouts), MCV's labels or none. DST gets one eStargz layer with the same files \
            (the same bytes; modes normalised to 0755/0644 by their executable bit, times to 0, as push writes \
            them) and exactly SRC's config labels, so MCV and mcvfs read it as before, and nothing is recompiled. \
            --hot-set puts those <KEY>/ entries first (see `push --hot-set`). Every byte read from SRC is checked \
            against its digest; --key and the other verify flags check SRC's signature first. Prints \
            "<digest><TAB><reference>".
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var trust: TrustOptions

    @Option(help: ArgumentHelp("Put these cache entries first, before the prefetch landmark.", valueName: "file"))
    var hotSet: String?

    @Option(
        help: """
            Sign the converted image with this cosign.key, as `mcvfs sign` does: both layouts unless \
            --signature-format says otherwise. Needs --key, --certificate-identity(-regexp) or --policy: SRC's \
            signature is verified first, so the key vouches only for what someone it trusts signed.
            """)
    var signKey: String?

    @Option(help: SignatureFormat.help) var signatureFormat: SignatureFormat = .both

    @Option(help: "Write an OCI image layout instead of pushing: oci-layout:DIR (DST's tag names the image).")
    var output: String?

    @Option(help: "RFC 3339 time to record as the image's creation time (default: none, for reproducible digests).")
    var created: String?

    @Option(help: "Blobs larger than this many bytes are uploaded in chunks of this size.")
    var chunkSize: Int = 16 << 20

    @Argument(help: "The image to convert: REGISTRY/REPOSITORY:TAG or @DIGEST.") var source: String
    @Argument(help: "REGISTRY/REPOSITORY[:TAG] to push the eStargz image to (tag default: latest).")
    var destination: String

    func validate() throws {
        try ImagePusher.validate(chunkSize: chunkSize, output: output, created: created)
        if signKey != nil && !trust.isEnabled {
            throw ValidationError(
                "--sign-key signs SRC's files anew, so SRC must be verified first: add --key PUBLIC_KEY, "
                    + "--certificate-identity(-regexp) or --policy FILE (the signer SRC carries)")
        }
    }

    func run() throws {
        try runReportingErrors(global) {
            let target = try ImageReference(parsing: destination)
            let pusher = try ImagePusher(
                reference: target, output: output, signKey: signKey, signatureFormat: signatureFormat,
                chunkSize: chunkSize, global: global)
            // Every image the reference names, whatever its GPU targets: a conversion keeps them all.
            let request = try LeasedCatalog(
                source, command: "convert", global: global, gpu: try GPUOptions.parse(["--gpu", "all"]),
                tritonVersion: nil, trust: trust, recording: .none)
            defer { request.layers.release() }
            for entry in request.catalog.skipped { Log.warning("skipped \(entry.name): \(entry.skipReason ?? "")") }
            guard request.catalog.used.count == 1 else {
                throw ConvertError.notOneImage(source, request.catalog.used.map(\.name))
            }
            let (image, layers) = try request.layers.indexUsedImages()[0]
            let entries = try Self.entries(of: layers, contents: request.layers)
            let labels = image.labels
            let count =
                Int(labels[CacheLabels.tritonEntryCount] ?? labels[CacheLabels.genericEntryCount] ?? "") ?? 0
            let plan = ImageBuilder.Plan(
                entries: entries, labels: labels, targets: image.targets ?? [], entryCount: count,
                hotSet: try hotSet.map(HotSet.init(contentsOf:)) ?? HotSet())
            let scratch = try WorkDirectory.temporary("convert")
            defer { scratch.remove() }
            let work = scratch.url
            let built = try ImageBuilder.build(plan, options: .init(format: .estargz, created: created), in: work)
            let tag = pusher.tag(suffix: nil)
            warnMissing(built.missedHotSet, tag: tag)
            Log.info("\(image.name) (\(image.digest.short)): \(entries.count) entries in \(layers.count) layer(s)")
            try pusher.publish(built, tag: tag, verb: "convert")
        }
    }

    /// What the image's layers hold once applied (whiteouts, hard links resolved), as entries an eStargz layer is
    /// written from, without the entries an eStargz layer of the source carries for itself (its TOC, its landmark).
    /// File bytes are read in place (a whole layer's pack is mapped; nothing is copied into memory).
    static func entries(of layers: [LayerIndex], contents: LeasedLayerProvider) throws -> [LayerWriter.Entry] {
        var entries: [LayerWriter.Entry] = []
        for (path, entry) in LayerIndex.flatten(layers) {
            if [EStargz.tocName, EStargz.prefetchLandmark, EStargz.noPrefetchLandmark].contains(path) { continue }
            let executable = entry.mode & 0o111 != 0
            switch entry.kind {
            case .directory:
                entries.append(.directory(path))
            case .symlink:
                entries.append(LayerWriter.Entry(path: path, content: .symlink(target: entry.linkTarget ?? "")))
            case .file:
                guard let content = entry.content else { continue }
                let bytes: LayerWriter.Entry.Content
                switch try contents.bytes(of: content) {
                case .stored(let file): bytes = .file(sourcePath: file, size: entry.size)
                case .held(let data): bytes = .bytes(data)
                case .mapped(let region):
                    // The pack stays mapped while the provider lives (this command); the writer only reads.
                    bytes =
                        region.bytes.isEmpty
                        ? .bytes(Data())
                        : .bytes(
                            Data(
                                bytesNoCopy: UnsafeMutableRawPointer(mutating: region.bytes.baseAddress!),
                                count: region.bytes.count, deallocator: .none))
                }
                entries.append(LayerWriter.Entry(path: path, content: bytes, executable: executable))
            default:
                continue
            }
        }
        return entries
    }
}

enum ConvertError: Error, CustomStringConvertible {
    case notOneImage(String, [String])

    var description: String {
        switch self {
        case .notOneImage(let reference, let names):
            return names.isEmpty
                ? "\(reference) names no cache image"
                : "\(reference) names \(names.count) images (\(names.joined(separator: ", "))): convert one at a time, "
                    + "by tag or digest"
        }
    }
}
