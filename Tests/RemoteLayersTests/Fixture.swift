import BlobCache
import ContentHash
import Dispatch
import Foundation
import LayerArchive
import OCI
import Registry
import TestSupport

@testable import RemoteLayers

func sha256(_ data: Data) -> Digest { SHA256Hasher.digest(data) }

/// Incompressible bytes, the same for the same seed (xorshift64*), so members keep the size of what they hold.
func noise(_ count: Int, seed: UInt64) -> Data {
    var state = (seed &+ 1) &* 0x9E37_79B9_7F4A_7C15
    var bytes = [UInt8](repeating: 0, count: count)
    for i in bytes.indices {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        bytes[i] = UInt8(truncatingIfNeeded: (state &* 2_685_821_657_736_338_717) >> 56)
    }
    return Data(bytes)
}

/// A Triton-shaped cache layer: `KEY<n>/` directories, each with kernel metadata, a group file and a binary.
/// The writer puts every metadata file first, then the binaries, so a directory's files lie in two runs; each
/// metadata file carries `metadataSize` bytes so that those runs sit further apart than the coalescing gap.
struct KernelLayer: Sendable {
    let layer: EStargzLayer
    let keys: [String]

    init(kernels: Int = 3, metadataSize: Int = 150 << 10, binarySize: Int = 64 << 10) throws {
        var files: [String: Data] = [:]
        var keys: [String] = []
        for n in 0..<kernels {
            let key = "KEY\(n)"
            keys.append(key)
            files["\(key)/add.json"] = noise(metadataSize, seed: UInt64(3 * n + 1))
            files["\(key)/__grp__add.json"] = Data("{\"child_paths\": {}} \(n)".utf8)
            files["\(key)/add.cubin"] = noise(binarySize, seed: UInt64(3 * n + 2))
        }
        layer = try EStargzLayer(files: files)
        self.keys = keys
    }

    func paths(of key: String) -> [String] { layer.files.keys.filter { $0.hasPrefix(key + "/") }.sorted() }
}

/// A registry holding `layers`, a store in a temporary directory, and fetchers over both.
final class FetchBench {
    let registry = InMemoryRegistry()
    let directory: TemporaryDirectory
    let store: DirectoryBlobStore
    let metrics = FetchMetrics()

    init(_ layers: [EStargzLayer]) throws {
        directory = try TemporaryDirectory()
        store = try DirectoryBlobStore(root: directory.url)
        for layer in layers { registry.add(layer.blob, as: layer.descriptor.digest) }
    }

    func fetcher(lazy: Bool = true, online: Bool = true, memory: MemoryBlobCache? = nil) throws -> LayerFetcher {
        try LayerFetcher(
            client: online ? registry.client() : nil, repository: "org/cache", store: store, metrics: metrics,
            lazy: lazy, memory: memory ?? MemoryBlobCache(store: store))
    }

    func reader(memory: MemoryBlobCache? = nil) throws -> VerifyingReader {
        VerifyingReader(
            client: try registry.client(), repository: "org/cache", metrics: metrics,
            memory: memory ?? MemoryBlobCache(store: store))
    }
}

/// The `RemoteFile`s of `layer`'s index, by path.
func remoteFiles(of layer: EStargzLayer) throws -> [String: RemoteFile] {
    let index = try EStargz.index(
        layer: layer.descriptor.digest, toc: try JSONEncoder().encode(layer.toc), tocOffset: layer.tocOffset)
    var map = RemoteFileMap.State()
    map.register(index, layer: layer.descriptor)
    var byPath: [String: RemoteFile] = [:]
    for entry in index.entries where entry.kind == .file {
        byPath[entry.path] = map.files[entry.content!]
    }
    return byPath
}
