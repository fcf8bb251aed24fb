import BlobCache
import Foundation
import ImageBuilder
import OCI

/// The vLLM part of a publish: each complete hash directory of the uppers that no image of the mount provides and
/// that was not published before, as an image of its own (one per vLLM hash and target, docs/vllm.md).
extension PublishJob {
    func publishVLLM(provided: Set<String>, published: [String: String], into report: inout Report) throws {
        let harvest = VLLMHarvest(uppers: uppers) { hash in
            let known = provided.contains(hash) || published[hash] != nil
            if known { report.known += 1 }
            return known
        }
        report.skipped += harvest.skipped
        for entry in harvest.entries {
            let work = try WorkDirectory.make("publish", in: ledger.layout)
            defer { work.remove() }
            guard try harvest.stage(entry, into: work.path + "/cache") else { continue }
            for image in try publisher.publish(vllmCache: work.path + "/cache", work: work.url) {
                report.images.append(image)
                if !publisher.options.dryRun { try ledger.record([entry.hash], tag: image.tag, from: entry.upper) }
            }
        }
    }
}

extension ImagePublisher {
    /// Publishes the vLLM cache root at `directory` (one hash directory, or a compaction's several) as one image,
    /// tagged `<prefix>-vllm-<target>-<digest>` (`fleet-vllm-cpu-avx512-...`); its keys are the hash directories.
    func publish(vllmCache directory: String, work: URL) throws -> [Outcome] {
        let scan = try CacheScan(scanning: directory)
        let builder = ImageBuilder(scan: scan, options: .init(format: .estargz, created: options.created))
        return try builder.plans().map { plan in
            var plan = plan
            // The staging directory names nothing a consumer knows (and would tell every puller the node's cache
            // path): a fixed root keeps the images of one hash alike whichever node publishes them.
            plan.labels[CacheLabels.kserveRootEnv] = "VLLM_CACHE_ROOT=\(PublishJob.canonicalVLLMRoot)"
            plan.labels.merge(options.labels) { _, added in added }
            let suffix = plan.targets.count == 1 ? FleetTag.targetNames(for: plan.targets)[plan.targets[0]] : nil
            plan.tagSuffix = "vllm-" + (suffix ?? FleetTag.anyTarget)
            let image = try builder.build(plan, in: work)
            defer { unlink(image.layer.path) }
            return try publish(image, keys: scan.vllmHashes)
        }
    }
}
