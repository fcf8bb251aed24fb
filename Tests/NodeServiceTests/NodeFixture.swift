import BlobCache
import ContentHash
import Foundation
import GPU
import NodeService
import OCI
import Synchronization
import TestSupport

/// A node as the commands wire one, over in-memory registries: an origin (and a mirror holding the same
/// repository), a fresh cache directory, and one cache image for cuda:90 whose single gzip layer holds a kernel
/// directory.
struct NodeFixture {
    static let reference = try! ImageReference(parsing: "registry.test/org/cache")
    static let selection = ResolvedSelection(scope: .targets([GPUTarget(backend: .cuda, arch: "90", warpSize: 32)]))
    static let summary = #"{"targets":[{"backend":"cuda","arch":"90","warp_size":32}]}"#
    static let files = ["io.triton.cache/KEY/add.cubin": "cubin bytes", "io.triton.cache/KEY/add.json": "{}"]

    let origin = InMemoryRegistry(host: "registry.test")
    let mirror = InMemoryRegistry(host: "mirror.test")
    let directory: TemporaryDirectory
    let layout: CacheLayout
    let log = LogRecorder()
    /// The pushed image's only layer.
    let layer: Descriptor

    init() throws {
        directory = try TemporaryDirectory()
        layout = try CacheLayout(root: directory.file("cache"))
        let tar = directory.file("layer.tar.gz")
        try makeTar(
            [.dir("io.triton.cache"), .dir("io.triton.cache/KEY")]
                + Self.files.sorted { $0.key < $1.key }.map {
                    .file($0.key, $0.value)
                }, at: tar, gzip: true)
        let data = try Data(contentsOf: URL(fileURLWithPath: tar))
        for registry in [origin, mirror] {
            try registry.pushImage(
                repository: "org/cache", tag: "cuda-sm90", labels: [CacheLabels.tritonSummary: Self.summary],
                layers: [(data, MediaType.ociLayerGzip)])
        }
        layer = Descriptor(
            mediaType: MediaType.ociLayerGzip, digest: SHA256Hasher.digest(data), size: Int64(data.count))
    }

    func cache(maxSize: Int64? = nil) throws -> NodeCache {
        try NodeCache(layout: layout, maxSize: maxSize, log: log.log)
    }

    func upstream(offline: Bool = false, mirrored: Bool = false) throws -> Upstream {
        if offline { return Upstream(reference: Self.reference, origin: nil, log: log.log) }
        return Upstream(
            reference: Self.reference, origin: try origin.client(),
            mirror: mirrored ? Upstream.Mirror(host: mirror.host, client: try mirror.client()) : nil, log: log.log)
    }

    func catalogs(
        _ upstream: Upstream, recording: CatalogService.Recording = .recordAndFallBack, cache: NodeCache
    ) -> CatalogService {
        CatalogService(
            upstream: upstream, store: cache.store, records: CatalogRecords(layout: layout), recording: recording)
    }

    /// Layer and config requests a registry served.
    static func blobRequests(_ registry: InMemoryRegistry) -> [String] {
        registry.paths.filter { $0.contains("/blobs/") }
    }
}

/// Collects what the node logs.
final class LogRecorder: Sendable {
    private let lines = Mutex<[String]>([])
    var log: NodeLog {
        NodeLog(info: { [self] in append("info: " + $0) }, warning: { [self] in append("warning: " + $0) })
    }
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var recorded: [String] { lines.withLock { $0 } }
}
