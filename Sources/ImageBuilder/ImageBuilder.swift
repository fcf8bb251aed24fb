import ContentHash
import Foundation
import GPU
import LayerArchive
import OCI

/// A blob written to disk, with its digest.
public struct BlobFile: Sendable, Hashable {
    public var path: String
    public var descriptor: Descriptor
}

/// One image ready to push or lay out: its layer on disk, config and manifest in memory.
public struct BuiltImage: Sendable {
    /// Appended to the user's tag by `--split per-target` (`cuda-sm90`); nil for the single image.
    public var tagSuffix: String?
    public var targets: [GPUTarget]
    public var entryCount: Int
    public var layer: BlobFile
    public var diffID: Digest
    /// Hot-set names that named nothing in this image (so not at the front of its layer).
    public var missedHotSet: [String]
    public var config: Data
    public var configDescriptor: Descriptor
    public var manifest: Data
    public var manifestDescriptor: Descriptor

    /// Layer then config: every blob the manifest names, in upload order.
    public var blobs: [(descriptor: Descriptor, source: BlobSource)] {
        [(layer.descriptor, .file(layer.path)), (configDescriptor, .bytes(config))]
    }

    public enum BlobSource: Sendable {
        case file(String)
        case bytes(Data)
    }
}

/// Builds MCV-layout cache images from a scanned cache directory (docs/mcv-images.md): one layer holding
/// `io.triton.cache/...` (or `io.vllm.cache/...`) and `io.triton.manifest/manifest.json`, an OCI config carrying
/// MCV's labels, and an OCI manifest. Reproducible: see `LayerWriter`; the config has no `created` unless asked.
public struct ImageBuilder: Sendable {
    public enum Split: String, Sendable, CaseIterable {
        case none
        /// One image per GPU target, tagged `<tag>-<backend>-<arch>` (`cuda-sm90`, `hip-gfx942`).
        case perTarget = "per-target"
    }

    /// How the layer is stored.
    public enum LayerFormat: String, Sendable, CaseIterable {
        /// Uncompressed tar.
        case tar
        case gzip
        case zstd
        /// gzip with one member per file and a TOC (`EStargz`): still a tar.gz to every reader, and mounts fetch
        /// only the files they read.
        case estargz

        init(_ compression: LayerWriter.Compression) {
            switch compression {
            case .none: self = .tar
            case .gzip: self = .gzip
            case .zstd: self = .zstd
            }
        }
    }

    public struct Options: Sendable {
        public var format: LayerFormat
        /// RFC 3339 time for the config's `created`; nil leaves it out, keeping digests reproducible.
        public var created: String?
        public var split: Split
        /// Cache entries to put first in an eStargz layer, before its prefetch landmark (`HotSet`).
        public var hotSet: HotSet
        /// The vLLM that wrote a vLLM cache (`cache.vllm.image/vllm-version`); a cache's files do not name it.
        public var vllmVersion: String?

        public init(
            format: LayerFormat = .estargz, created: String? = nil, split: Split = .none, hotSet: HotSet = HotSet()
        ) {
            self.format = format
            self.created = created
            self.split = split
            self.hotSet = hotSet
        }

        public init(compression: LayerWriter.Compression, created: String? = nil, split: Split = .none) {
            self.init(format: LayerFormat(compression), created: created, split: split)
        }
    }

    /// What one image will hold, before any byte is written.
    public struct Plan: Sendable {
        public var tagSuffix: String?
        public var entries: [LayerWriter.Entry]
        /// Layer paths of the hot set, in order: what an eStargz layer puts before its prefetch landmark.
        public var prioritized: [String] = []
        /// Hot-set names that name nothing in this image.
        public var missedHotSet: [String] = []
        public var kernels: [CacheScan.Kernel]
        public var labels: [String: String]
        public var targets: [GPUTarget]

        /// A plan for entries that come from elsewhere than a scan (`mcvfs convert`): the hot set's names are
        /// looked up under both cache roots a mount serves (`io.triton.cache/`, `io.vllm.cache/`).
        public init(
            entries: [LayerWriter.Entry], labels: [String: String], targets: [GPUTarget], entryCount: Int,
            hotSet: HotSet
        ) {
            self.entries = entries
            self.labels = labels
            self.targets = targets
            self.kernels = []
            self.entryCount = entryCount
            (prioritized, missedHotSet) = Self.prioritize(
                hotSet, roots: CacheScan.Kind.allCases.map(\.cacheDirectory), in: entries)
        }

        init(
            tagSuffix: String?, entries: [LayerWriter.Entry], kernels: [CacheScan.Kernel], labels: [String: String],
            targets: [GPUTarget], hotSet: HotSet, root: String
        ) {
            self.tagSuffix = tagSuffix
            self.entries = entries
            self.kernels = kernels
            self.labels = labels
            self.targets = targets
            self.entryCount = kernels.count
            (prioritized, missedHotSet) = Self.prioritize(hotSet, roots: [root], in: entries)
        }

        /// Kernels in the image (what the labels count).
        public var entryCount: Int

        /// The layer path of each hot-set name under the first root that has it; the names no root has.
        static func prioritize(
            _ hotSet: HotSet, roots: [String], in entries: [LayerWriter.Entry]
        ) -> (paths: [String], missed: [String]) {
            guard !hotSet.isEmpty else { return ([], []) }
            let paths = Set(entries.map(\.path))
            var found: [String] = []
            var missed: [String] = []
            for name in hotSet.names {
                if let path = roots.map({ $0 + "/" + name }).first(where: paths.contains) {
                    found.append(path)
                } else {
                    missed.append(name)
                }
            }
            return (found, missed)
        }
    }

    public let scan: CacheScan
    public let options: Options

    public init(scan: CacheScan, options: Options) {
        self.scan = scan
        self.options = options
    }

    /// The images to build: one, or one per target with `--split per-target`.
    /// - Throws: `BuildError.splitOfVLLMCache` or `.splitWithoutTargets` when splitting a vLLM cache or a cache
    ///   without kernel metadata.
    public func plans() throws(BuildError) -> [Plan] {
        guard options.split == .perTarget else {
            return [plan(files: scan.files, kernels: scan.kernels, suffix: nil)]
        }
        guard scan.kind == .triton else { throw .splitOfVLLMCache }
        let targets = scan.targets
        guard !targets.isEmpty else { throw .splitWithoutTargets }
        // Each <KEY>/ directory belongs to the targets of its kernels; helper-only entries (driver .so files) to
        // every target of their backend, or to all when their name does not tell.
        var targetsByDirectory: [String: Set<GPUTarget>] = [:]
        for kernel in scan.kernels { targetsByDirectory[kernel.directory, default: []].insert(kernel.metadata.target) }
        var helperBackends: [String: Set<GPUTarget.Backend>] = [:]
        for file in scan.files {
            let parts = file.path.split(separator: "/")
            guard parts.count == 2 else { continue }
            let backend: GPUTarget.Backend? =
                parts[1].hasPrefix("cuda_") ? .cuda : parts[1].hasPrefix("hip_") ? .hip : nil
            helperBackends[String(parts[0]), default: []].formUnion(backend.map { [$0] } ?? [])
        }
        let suffixes = FleetTag.targetNames(for: targets)
        return targets.map { target in
            let files = scan.files.filter { file in
                let directory = String(file.path.split(separator: "/").first ?? "")
                if let owners = targetsByDirectory[directory] { return owners.contains(target) }
                let backends = helperBackends[directory] ?? []
                return backends.isEmpty || backends.contains(target.backend)
            }
            let kernels = scan.kernels.filter { $0.metadata.target == target }
            return plan(files: files, kernels: kernels, suffix: suffixes[target])
        }
    }

    private func plan(files: [CacheScan.File], kernels: [CacheScan.Kernel], suffix: String?) -> Plan {
        let kind = scan.kind
        var entries: [LayerWriter.Entry] = [.directory(kind.cacheDirectory), .directory(kind.manifestDirectory)]
        var size: Int64 = 0
        for file in files {
            let path = kind.cacheDirectory + "/" + file.path
            switch file.content {
            case .directory:
                entries.append(.directory(path))
            case .file(let bytes, let executable):
                size += bytes
                entries.append(
                    LayerWriter.Entry(
                        path: path, content: .file(sourcePath: scan.root + "/" + file.path, size: bytes),
                        executable: executable))
            case .symlink(let target):
                entries.append(LayerWriter.Entry(path: path, content: .symlink(target: target)))
            }
        }
        let hashes = scan.vllmHashes
        entries.append(
            LayerWriter.Entry(
                path: kind.manifestDirectory + "/manifest.json",
                content: .bytes(MCVMetadata.manifest(kind: kind, kernels: kernels, vllmHashes: hashes))))
        let targets = CacheScan.distinctTargets(kernels.map(\.metadata.target) + scan.vllmTargets)
        let labels = MCVMetadata.labels(
            kind: kind, kernels: kernels, targets: targets, vllmHashes: hashes, cacheSizeBytes: size, files: files,
            root: scan.root, vllmVersion: options.vllmVersion)
        return Plan(
            tagSuffix: suffix, entries: entries, kernels: kernels, labels: labels, targets: targets,
            hotSet: options.hotSet, root: kind.cacheDirectory)
    }

    /// Writes `plan`'s layer into `directory` and assembles its config and manifest.
    /// - Throws: `TarError` from the writer, `BuildError.io` for file failures.
    public func build(_ plan: Plan, in directory: URL) throws -> BuiltImage {
        try Self.build(plan, options: options, in: directory)
    }

    /// Writes `plan`'s layer in the format `options` name into `directory` and assembles its config and manifest.
    /// - Throws: `TarError` from the writer, `BuildError.io` for file failures.
    public static func build(_ plan: Plan, options: Options, in directory: URL) throws -> BuiltImage {
        let tarPath = directory.appendingPathComponent("layer-\(UUID().uuidString).tar").path
        let layerPath: String
        let layerDigest: Digest
        let diffID: (digest: Digest, size: Int64)
        let mediaType: String
        var annotations: [String: String]?
        switch options.format {
        case .estargz:
            layerPath = tarPath + ".gz"
            var written: EStargzWriter.Written?
            layerDigest = try Self.writeHashed(to: layerPath) { sink in
                written = try EStargzWriter.write(
                    plan.entries, prioritized: plan.prioritized, scratch: tarPath, to: sink)
            }.digest
            diffID = (written!.diffID, written!.uncompressedSize)
            mediaType = MediaType.ociLayerGzip
            annotations = [
                EStargz.tocDigestAnnotation: written!.tocDigest.description,
                EStargz.uncompressedSizeAnnotation: String(written!.uncompressedSize),
            ]
        case .tar:
            diffID = try Self.writeHashed(to: tarPath) { sink in try LayerWriter.writeTar(plan.entries, to: sink) }
            layerPath = tarPath
            layerDigest = diffID.digest
            mediaType = MediaType.ociLayerTar
        case .gzip, .zstd:
            diffID = try Self.writeHashed(to: tarPath) { sink in try LayerWriter.writeTar(plan.entries, to: sink) }
            let compression: LayerWriter.Compression = options.format == .gzip ? .gzip : .zstd
            layerPath = tarPath + (compression == .gzip ? ".gz" : ".zst")
            layerDigest = try Self.writeHashed(to: layerPath) { sink in
                try LayerWriter.compress(file: tarPath, as: compression, to: sink)
            }.digest
            unlink(tarPath)
            mediaType = compression == .gzip ? MediaType.ociLayerGzip : MediaType.ociLayerZstd
        }
        let layerSize = try Self.fileSize(layerPath)
        let layer = BlobFile(
            path: layerPath,
            descriptor: Descriptor(
                mediaType: mediaType, digest: layerDigest, size: layerSize, annotations: annotations))

        let config = Self.configJSON(labels: plan.labels, diffID: diffID.digest, created: options.created)
        let configDescriptor = Descriptor(
            mediaType: MediaType.ociConfig, digest: SHA256Hasher.digest(config), size: Int64(config.count))
        let manifest = MCVMetadata.encode(
            Manifest(mediaType: MediaType.ociManifest, config: configDescriptor, layers: [layer.descriptor]))
        let manifestDescriptor = Descriptor(
            mediaType: MediaType.ociManifest, digest: SHA256Hasher.digest(manifest), size: Int64(manifest.count))
        return BuiltImage(
            tagSuffix: plan.tagSuffix, targets: plan.targets, entryCount: plan.entryCount, layer: layer,
            diffID: diffID.digest, missedHotSet: plan.missedHotSet, config: config, configDescriptor: configDescriptor,
            manifest: manifest, manifestDescriptor: manifestDescriptor)
    }

    /// The OCI image config: labels, the layer's diff ID, and a fixed platform (a kernel cache has no CPU
    /// architecture of its own; a fixed value keeps the digest the same on every build machine).
    static func configJSON(labels: [String: String], diffID: Digest, created: String?) -> Data {
        MCVMetadata.encode(
            ImageConfig(architecture: "amd64", os: "linux", created: created, labels: labels, diffIDs: [diffID]))
    }

    /// Runs `write` with a sink that stores the bytes at `path` (created exclusively) and hashes them.
    static func writeHashed(
        to path: String, _ write: (@escaping (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    ) throws -> (digest: Digest, size: Int64) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BuildError.io(operation: "create", path: path, errno: errno) }
        defer { close(fd) }
        final class State: @unchecked Sendable {
            var hasher: SHA256Hasher? = SHA256Hasher()
            var size: Int64 = 0
        }
        let state = State()
        try write { chunk in
            state.hasher!.update(chunk)
            state.size += Int64(chunk.count)
            var offset = 0
            while offset < chunk.count {
                let n = Glibc.write(fd, chunk.baseAddress! + offset, chunk.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw BuildError.io(operation: "write", path: path, errno: errno)
                }
                offset += n
            }
        }
        guard fsync(fd) == 0 else { throw BuildError.io(operation: "fsync", path: path, errno: errno) }
        let hasher = state.hasher.take()!
        return (hasher.finalize(), state.size)
    }

    static func fileSize(_ path: String) throws -> Int64 {
        var info = stat()
        guard stat(path, &info) == 0 else { throw BuildError.io(operation: "stat", path: path, errno: errno) }
        return Int64(info.st_size)
    }
}
