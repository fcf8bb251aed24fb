import BlobCache
import ContentHash
import Foundation
import LayerArchive
import OCI
import TestSupport
import Testing

@testable import ImageBuilder

@Suite struct ImageBuilderTests {
    func build(_ path: String, _ options: ImageBuilder.Options = .init(), in dir: TemporaryDirectory) throws
        -> [BuiltImage]
    {
        let builder = ImageBuilder(scan: try CacheScan(scanning: path), options: options)
        return try builder.plans().map { try builder.build($0, in: dir.url) }
    }

    func config(_ image: BuiltImage) throws -> ImageConfig { try ImageConfig(parsing: image.config) }

    @Test(arguments: [
        (Fixtures.cuda90, "cuda", "90", 32, 6),
        (Fixtures.cuda80, "cuda", "80", 32, 6),
        (Fixtures.hip942, "hip", "gfx942", 64, 6),
        (Fixtures.mcvCuda, "cuda", "75", 32, 1),
        (Fixtures.mcvRocm, "hip", "gfx90a", 64, 1),
    ])
    func labelsParseAsMCVWritesThem(path: String, backend: String, arch: String, warp: Int, count: Int) throws {
        let dir = try TemporaryDirectory()
        let image = try #require(try build(path, in: dir).first)
        let labels = try config(image).labels
        // The summary as MCV writes it: arch a string, even for CUDA.
        let summary = try #require(labels["cache.triton.image/summary"])
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(summary.utf8)) as? [String: Any])
        let targets = try #require(parsed["targets"] as? [[String: Any]])
        #expect(targets.count == 1)
        #expect(targets[0]["backend"] as? String == backend)
        #expect(targets[0]["arch"] as? String == arch)
        #expect(targets[0]["warp_size"] as? Int == warp)
        #expect(labels["cache.triton.image/entry-count"] == String(count))
        #expect(labels["model.cache.image/entry-count"] == String(count))
        #expect(labels["cache.triton.image/variant"] == "multi")
        #expect(labels["model.cache.image/type"] == "triton")
        #expect(labels["model.cache.image/summary"] == summary)
        let size = try FileManager.default.subpathsOfDirectory(atPath: path).reduce(Int64(0)) { total, sub in
            let attributes = try FileManager.default.attributesOfItem(atPath: path + "/" + sub)
            return attributes[.type] as? FileAttributeType == .typeRegular
                ? total + (attributes[.size] as! Int64) : total
        }
        #expect(labels["cache.triton.image/cache-size-bytes"] == String(size))
        // mcvfs's own label reader agrees.
        let cacheLabels = CacheLabels(labels)
        #expect(
            cacheLabels.targets == [GPUTarget(backend: backend == "cuda" ? .cuda : .hip, arch: arch, warpSize: warp)])
        #expect(cacheLabels.kinds == [.triton])
    }

    @Test func manifestHasOneEntryPerKernelFromItsMetadata() throws {
        let scan = try CacheScan(scanning: Fixtures.cuda90)
        let data = MCVMetadata.manifest(kind: .triton, kernels: scan.kernels, vllmHashes: [])
        let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: [[String: Any]]])
        let entries = try #require(document["triton"])
        #expect(entries.count == 6)
        var hashes = Set<String>()
        for name in try FileManager.default.contentsOfDirectory(atPath: Fixtures.cuda90) {
            for file in try FileManager.default.contentsOfDirectory(atPath: Fixtures.cuda90 + "/" + name)
            where file.hasSuffix(".json") && !file.hasPrefix("__grp__") {
                let json =
                    try JSONSerialization.jsonObject(
                        with: Data(contentsOf: URL(fileURLWithPath: Fixtures.cuda90 + "/\(name)/\(file)")))
                    as! [String: Any]
                hashes.insert(json["hash"] as! String)
            }
        }
        #expect(Set(entries.compactMap { $0["hash"] as? String }) == hashes)
        for entry in entries {
            #expect(entry["backend"] as? String == "cuda")
            #expect(entry["arch"] as? String == "90")
            #expect(entry["warp_size"] as? Int == 32)
            #expect(entry["num_warps"] is Int)
            #expect(entry["num_stages"] is Int)
            #expect(entry["debug"] as? Bool == false)
        }
    }

    @Test func vllmImageCarriesVLLMLayoutAndLabels() throws {
        let dir = try TemporaryDirectory()
        let image = try #require(try build(Fixtures.vllm, in: dir).first)
        let labels = try config(image).labels
        #expect(labels["cache.vllm.image/entry-count"] == "1")
        #expect(labels["model.cache.image/type"] == "vllm")
        #expect(labels["cache.triton.image/summary"] == nil)
        let summary = try #require(labels["cache.vllm.image/summary"])
        #expect(summary.contains(#""arch":"gfx90a""#))
        #expect(CacheLabels(labels).kinds == [.vllm])
    }

    @Test func sameCacheGivesTheSameDigests() throws {
        let first = try TemporaryDirectory()
        let second = try TemporaryDirectory()
        // A copy elsewhere, with other mtimes and inode order: content alone decides.
        let copy = try second.copy(Fixtures.cuda90, to: "elsewhere")
        for compression in LayerWriter.Compression.allCases {
            let a = try #require(try build(Fixtures.cuda90, .init(compression: compression), in: first).first)
            let b = try #require(try build(copy, .init(compression: compression), in: second).first)
            #expect(a.manifestDescriptor.digest == b.manifestDescriptor.digest, "\(compression)")
            #expect(a.layer.descriptor.digest == b.layer.descriptor.digest)
            #expect(a.diffID == b.diffID)
        }
        // Names past ustar's 100 bytes need pax headers: those must be reproducible too.
        let vllmCopy = try second.copy(Fixtures.vllm, to: "vllm")
        let a = try #require(try build(Fixtures.vllm, in: first).first)
        let b = try #require(try build(vllmCopy, in: second).first)
        #expect(a.manifestDescriptor.digest == b.manifestDescriptor.digest)
    }

    @Test func configHasNoCreatedTimeUnlessAsked() throws {
        let dir = try TemporaryDirectory()
        let plain = try #require(try build(Fixtures.mcvCuda, in: dir).first)
        #expect(try config(plain).created == nil)
        let dated = try #require(try build(Fixtures.mcvCuda, .init(created: "2025-01-31T12:00:00Z"), in: dir).first)
        #expect(try config(dated).created == "2025-01-31T12:00:00Z")
        #expect(plain.manifestDescriptor.digest != dated.manifestDescriptor.digest)
        #expect(plain.layer.descriptor.digest == dated.layer.descriptor.digest)
    }

    @Test func manifestAndConfigUseOCIMediaTypesAndMatchTheirDescriptors() throws {
        let dir = try TemporaryDirectory()
        let image = try #require(try build(Fixtures.mcvCuda, .init(compression: .zstd), in: dir).first)
        guard case .manifest(let manifest) = try ManifestDocument(parsing: image.manifest) else {
            Issue.record("not a manifest")
            return
        }
        #expect(manifest.mediaType == MediaType.ociManifest)
        #expect(manifest.config.mediaType == MediaType.ociConfig)
        #expect(manifest.layers.map(\.mediaType) == [MediaType.ociLayerZstd])
        #expect(manifest.config.digest == SHA256Hasher.digest(image.config))
        let layerBytes = try Data(contentsOf: URL(fileURLWithPath: image.layer.path))
        #expect(manifest.layers[0].digest == SHA256Hasher.digest(layerBytes))
        #expect(manifest.layers[0].size == Int64(layerBytes.count))
        #expect(try config(image).rootfs?.diffIDs == [image.diffID])
    }

    @Test func perTargetSplitGivesOneImagePerTargetWithOnlyItsKernels() throws {
        let dir = try TemporaryDirectory()
        try dir.copy(Fixtures.cuda90, to: "mixed")
        let mixed = try dir.copy(Fixtures.hip942, to: "mixed")
        // Driver helper entries: cuda_utils.so goes with CUDA, a launcher that does not name its backend with both.
        let cudaHelper = String(repeating: "C", count: 52)
        let launcher = String(repeating: "L", count: 52)
        try dir.write("elf", to: "mixed/\(cudaHelper)/cuda_utils.so")
        try dir.write("elf", to: "mixed/\(launcher)/__triton_launcher.so")
        let builder = ImageBuilder(scan: try CacheScan(scanning: mixed), options: .init(split: .perTarget))
        let plans = try builder.plans()
        #expect(plans.map(\.tagSuffix) == ["cuda-sm90", "hip-gfx942"])
        for plan in plans {
            #expect(plan.kernels.count == 6)
            #expect(Set(plan.kernels.map(\.metadata.target)).count == 1)
            #expect(CacheLabels(plan.labels).targets == plan.targets)
            let keys = Set(
                plan.entries.compactMap { entry -> String? in
                    let parts = entry.path.split(separator: "/")
                    return parts.count >= 2 && parts[0] == "io.triton.cache" ? String(parts[1]) : nil
                })
            let helpers: Set<String> = plan.tagSuffix == "cuda-sm90" ? [cudaHelper, launcher] : [launcher]
            #expect(keys == Set(plan.kernels.map(\.directory)).union(helpers))
        }
        #expect(throws: BuildError.splitOfVLLMCache) {
            try ImageBuilder(scan: try CacheScan(scanning: Fixtures.vllm), options: .init(split: .perTarget)).plans()
        }
        #expect(
            BuildError.splitOfVLLMCache.description
                == "--split per-target applies to Triton caches; a vLLM cache serves one GPU model")
    }

    @Test func mcvfsOwnIndexerAcceptsTheLayer() throws {
        let dir = try TemporaryDirectory()
        let scan = try CacheScan(scanning: Fixtures.cuda90)
        let builder = ImageBuilder(scan: scan, options: .init(compression: .gzip))
        let image = try builder.build(try #require(builder.plans().first), in: dir.url)
        let store = try DirectoryBlobStore(root: dir.url.appendingPathComponent("store"))
        let index = try LayerUnpacker(store: store).index(
            layer: image.layer.descriptor.digest, blobPath: image.layer.path,
            mediaType: image.layer.descriptor.mediaType)
        let files = index.entries.filter { $0.kind == .file }.map(\.path)
        #expect(files.contains("io.triton.manifest/manifest.json"))
        #expect(
            files.filter { $0.hasPrefix("io.triton.cache/") }.count
                == scan.files.filter {
                    if case .file = $0.content { return true } else { return false }
                }.count)
        // Every stored file matches its source byte for byte.
        for entry in index.entries where entry.kind == .file && entry.path.hasPrefix("io.triton.cache/") {
            let source = Fixtures.cuda90 + "/" + entry.path.dropFirst("io.triton.cache/".count)
            let digest = SHA256Hasher.digest(try Data(contentsOf: URL(fileURLWithPath: source)))
            #expect(entry.content == digest, "\(entry.path)")
        }
    }
}

/// The labels beyond MCV's own: KServe's (as GKM's MCV writes them) and the kernels' Triton version.
@Suite struct KServeLabelTests {
    func labels(_ path: String) throws -> [String: String] {
        let dir = try TemporaryDirectory()
        let builder = ImageBuilder(scan: try CacheScan(scanning: path), options: .init())
        let image = try #require(try builder.plans().first.map { try builder.build($0, in: dir.url) })
        return try ImageConfig(parsing: image.config).labels
    }

    @Test func aTritonCacheSaysWhereItWasCapturedAndWhichTritonCompiledIt() throws {
        let labels = try labels(Fixtures.cuda90)
        #expect(labels["io.kserve.km/framework"] == "triton")
        #expect(labels["io.kserve.km/cache-type"] == "triton")
        #expect(labels["io.kserve.km/cache-mount-subpath"] == ".")
        // The fixture was compiled at /opt/build/cuda-90/.triton/cache: its group files say so.
        #expect(labels["io.kserve.km/cache-root-env"] == "TRITON_CACHE_DIR=/opt/build/cuda-90/.triton/cache")
        #expect(labels["model.cache.image/triton-version"] == "3.9.0")
        #expect(labels["io.kserve.km/cache-hash"] == nil)
        #expect(CacheLabels(labels).unservableReason == nil)
    }

    @Test func aVLLMCacheCarriesKServesServingPlan() throws {
        let labels = try labels(Fixtures.vllm)
        #expect(labels["io.kserve.km/framework"] == "vllm")
        #expect(labels["io.kserve.km/cache-type"] == "torch-compile")
        #expect(labels["io.kserve.km/cache-mount-subpath"] == "torch_compile_cache")
        #expect(labels["io.kserve.km/cache-hash"] == "d4ec7c2a7d")
        #expect(labels["io.kserve.km/cache-root-env"] == "VLLM_CACHE_ROOT=/home/vllm/.cache/vllm")
        #expect(labels["cache.vllm.image/format"] == "triton")
        #expect(CacheLabels(labels).kinds == [.vllm])
    }

    @Test func groupFilesThatDisagreeNameNoCaptureRoot() throws {
        let dir = try TemporaryDirectory()
        var files: [CacheScan.File] = []
        for (n, root) in ["/one/cache", "/two/cache"].enumerated() {
            let key = String(repeating: "A", count: 51) + String(n)
            try FileManager.default.createDirectory(
                at: dir.url.appendingPathComponent(key), withIntermediateDirectories: true)
            let group = Data(#"{"child_paths": {"k.json": "\#(root)/\#(key)/k.json"}}"#.utf8)
            try group.write(to: dir.url.appendingPathComponent("\(key)/__grp__k.json"))
            files.append(CacheScan.File(path: "\(key)/__grp__k.json", content: .file(size: 1, executable: false)))
        }
        #expect(MCVMetadata.captureRoot(files: files, root: dir.url.path) == nil)
        #expect(MCVMetadata.captureRoot(files: [files[0]], root: dir.url.path) == "/one/cache")
    }

    @Test func theVersionLabelIsLeftOutUnlessEveryKernelNamesItsVersion() throws {
        let scan = try CacheScan(scanning: Fixtures.cuda90)
        var kernels = scan.kernels
        #expect(MCVMetadata.tritonVersions(kernels) == "3.9.0")
        kernels[0].metadata.tritonVersion = "3.8.0"
        #expect(MCVMetadata.tritonVersions(kernels) == "3.8.0,3.9.0")
        kernels[1].metadata.tritonVersion = nil
        #expect(MCVMetadata.tritonVersions(kernels) == nil)
    }
}
