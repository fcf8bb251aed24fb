import ArgumentParser
import BlobCache
import Foundation
import ImageBuilder
import LayerArchive
import OCI

extension ImageBuilder.LayerFormat: ExpressibleByArgument {}
extension ImageBuilder.Split: ExpressibleByArgument {}

struct PushCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Build a cache image from a Triton or vLLM cache directory and push it (no container engine needed).",
        discussion: """
            The image has Model Cache Vault's layout and labels: one layer holding io.triton.cache/<KEY>/... (or \
            io.vllm.cache/torch_compile_cache/...) and io.triton.manifest/manifest.json, and cache.triton.image/*, \
            cache.vllm.image/* and model.cache.image/* config labels, so MCV and mcvfs both read it. The same \
            cache content always gives the same digest. Temporary dirs (tmp.pid_*), lock files and anything that \
            is not a cache entry are left out; a symlink pointing outside CACHE_DIR is refused.

            Blobs the registry already has are not sent again; blobs above --chunk-size go up in chunks. The \
            manifest is pushed last, so a failed push never leaves the tag naming an incomplete image. Prints \
            "<digest><TAB><reference>" per image pushed.

            --split per-target pushes one image per GPU target found in the cache, tagged TAG-cuda-sm90, \
            TAG-hip-gfx942, ... (just cuda-sm90, ... when REFERENCE has no tag). Each carries only its target's \
            kernels and a summary label naming that target, so `mcvfs mount` of the repository (no tag) uses \
            exactly the tags matching the host's GPUs.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(
        help: """
            Layer format: estargz (gzip with a per-file index, so mounts fetch only what they read; any tar.gz \
            reader extracts it), gzip, zstd or tar (uncompressed).
            """)
    var layerFormat: ImageBuilder.LayerFormat = .estargz

    @Option(help: "none, or per-target: one image (tag) per GPU target in the cache.")
    var split: ImageBuilder.Split = .none

    @Option(help: "RFC 3339 time to record as the image's creation time (default: none, for reproducible digests).")
    var created: String?

    @Option(help: "Write an OCI image layout instead of pushing: oci-layout:DIR (REFERENCE's tag names the image).")
    var output: String?

    @Option(
        help: """
            Sign each pushed image with this cosign.key, as `mcvfs sign` does: both layouts unless \
            --signature-format says otherwise (password from COSIGN_PASSWORD or a prompt).
            """)
    var signKey: String?

    @Option(help: SignatureFormat.help) var signatureFormat: SignatureFormat = .both

    @Option(
        help: ArgumentHelp(
            "Put these cache entries first in the eStargz layer, before its .prefetch.landmark, so a mount fetches "
                + "them with one request at its first lookup.",
            discussion: "One <KEY> (or deeper path under the cache root) per line, in the order a workload uses them: "
                + "what `mcvfs export --hot-set` writes from a mount.",
            valueName: "file"))
    var hotSet: String?

    @Flag(help: "Print JSON: {\"images\": [{\"name\", \"digest\"}]} instead of a <digest><TAB><name> line per image.")
    var json = false

    @Option(
        help: ArgumentHelp(
            "The vLLM version that wrote a vLLM cache, recorded as cache.vllm.image/vllm-version (vLLM hashes its "
                + "version into every key; the cache's files do not name it).",
            valueName: "version"))
    var vllmVersion: String?

    @Option(help: "Blobs larger than this many bytes are uploaded in chunks of this size.")
    var chunkSize: Int = 16 << 20

    @Argument(help: "A Triton cache directory (TRITON_CACHE_DIR) or a vLLM cache root (VLLM_CACHE_ROOT).")
    var cacheDirectory: String

    @Argument(help: "REGISTRY/REPOSITORY[:TAG] to push to (tag default: latest).")
    var reference: String

    func validate() throws {
        try ImagePusher.validate(chunkSize: chunkSize, output: output, created: created)
        if hotSet != nil && layerFormat != .estargz {
            throw ValidationError("--hot-set orders an eStargz layer; drop --layer-format \(layerFormat.rawValue)")
        }
    }

    func run() throws {
        try runReportingErrors(global) {
            let ref = try ImageReference(parsing: reference)
            guard ref.digest == nil else { throw PushError.digestReference(ref.description) }
            let scan = try CacheScan(scanning: cacheDirectory)
            for skipped in scan.skipped { Log.info("left out \(skipped.path): \(skipped.reason)") }
            if !scan.skipped.isEmpty {
                Log.warning(
                    "left out \(scan.skipped.count) path(s) that are not cache entries (temp dirs, locks, ...); "
                        + "--log-level info lists them")
            }
            var pusher = try ImagePusher(
                reference: ref, output: output, signKey: signKey, signatureFormat: signatureFormat,
                chunkSize: chunkSize, global: global)
            pusher.quiet = json
            let hot = try hotSet.map(HotSet.init(contentsOf:)) ?? HotSet()
            var options = ImageBuilder.Options(format: layerFormat, created: created, split: split, hotSet: hot)
            options.vllmVersion = vllmVersion
            if scan.kind == .vllm, vllmVersion == nil {
                Log.info("no vLLM version recorded; pass --vllm-version so tools can skip images for another vLLM")
            }
            let builder = ImageBuilder(scan: scan, options: options)
            let plans = try builder.plans()

            let scratch = try WorkDirectory.temporary("push")
            defer { scratch.remove() }
            let work = scratch.url

            var pushed: [ImageOutput] = []
            for plan in plans {
                let tag = pusher.tag(suffix: plan.tagSuffix)
                let building = ProgressBar(label: "push \(tag)")
                building.status("building the layer from \(plan.entryCount) cache entries...")
                let image = try builder.build(plan, in: work)
                building.clear()
                warnMissing(image.missedHotSet, tag: tag)
                let digest = try pusher.publish(image, tag: tag, verb: "push")
                pushed.append(ImageOutput(name: pusher.name(tag: tag), digest: digest.description))
            }
            if json { try printJSON(["images": pushed]) }
        }
    }
}
