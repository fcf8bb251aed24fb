import BlobCache
import ContentHash
import Foundation
import ImageFS
import LayerArchive
import OCI
import Synchronization
import Testing

/// A provider over hand-made layer indexes whose file blobs live in a real store in a temp directory.
final class FixtureProvider: LayerProvider {
    let store: DirectoryBlobStore
    let layers: [Digest: LayerIndex]
    let requests = Mutex<[Digest]>([])
    let failing = Mutex(false)

    init(store: DirectoryBlobStore, layers: [LayerIndex]) {
        self.store = store
        self.layers = Dictionary(uniqueKeysWithValues: layers.map { ($0.layer, $0) })
    }

    /// Layers whose fetch fails, and layers whose fetch waits until `release`d (a slow registry).
    let failingLayers = Mutex<Set<Digest>>([])
    private let holds = Mutex<[Digest: DispatchSemaphore]>([:])

    struct Unreachable: Error, CustomStringConvertible {
        var description: String { "registry unreachable (test)" }
    }

    func hold(_ layer: LayerIndex) { holds.withLock { $0[layer.layer] = DispatchSemaphore(value: 0) } }

    func release(_ layer: LayerIndex) { holds.withLock { $0.removeValue(forKey: layer.layer) }?.signal() }

    func index(of layer: Descriptor, in image: CacheImage) throws -> LayerIndex {
        requests.withLock { $0.append(layer.digest) }
        if let hold = holds.withLock({ $0[layer.digest] }) { _ = hold.wait(timeout: .now() + 20) }
        if failing.withLock({ $0 }) || failingLayers.withLock({ $0.contains(layer.digest) }) { throw Unreachable() }
        return layers[layer.digest]!
    }

    /// Blob reads (the tree reads kernel metadata and group files when it resolves a directory).
    let reads = Mutex<[Digest]>([])
    let failingReads = Mutex(false)
    let prefetched = Mutex<[[Digest]]>([])

    func bytes(of content: Digest) throws -> FileBytes {
        reads.withLock { $0.append(content) }
        if failingReads.withLock({ $0 }) { throw Unreachable() }
        return .stored(path: store.path(for: content)!)
    }

    func prefetch(_ contents: [Digest]) { prefetched.withLock { $0.append(contents) } }
}

struct Fixture {
    let root: URL
    let store: DirectoryBlobStore

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("imagefs-\(UUID().uuidString)")
        store = try DirectoryBlobStore(root: root)
    }

    func file(_ path: String, _ text: String, mode: UInt32 = 0o644) throws -> TarEntry {
        let data = Data(text.utf8)
        let stored = try store.ingest(data: data)
        return TarEntry(
            path: path, kind: .file, mode: mode, size: Int64(data.count), linkTarget: nil, mtime: 1_700_000_000,
            content: stored.digest)
    }

    func directory(_ path: String) -> TarEntry {
        TarEntry(path: path, kind: .directory, mode: 0o755, size: 0, linkTarget: nil, mtime: 0, content: nil)
    }

    func whiteout(_ path: String) -> TarEntry {
        TarEntry(path: path, kind: .whiteout, mode: 0, size: 0, linkTarget: nil, mtime: 0, content: nil)
    }

    /// A Triton kernel directory as Triton writes it, compiled under /opt/build.
    func kernel(_ key: String, name: String, target: String, prefix: String = "io.triton.cache/") throws -> [TarEntry] {
        let parts = target.split(separator: ":")
        let arch = Int(parts[1]).map(String.init) ?? "\"\(parts[1])\""
        let metadata =
            "{\"hash\":\"h\",\"name\":\"\(name)\",\"target\":{\"backend\":\"\(parts[0])\",\"arch\":\(arch),\"warp_size\":\(parts[2])}}"
        let group =
            "{\"child_paths\":{\"\(name).json\":\"/opt/build/.triton/cache/\(key)/\(name).json\",\"\(name).bin\":\"/opt/build/.triton/cache/\(key)/\(name).bin\"}}"
        return [
            directory(prefix + key),
            try file(prefix + "\(key)/\(name).json", metadata),
            try file(prefix + "\(key)/\(name).bin", "binary of \(name) for \(target)"),
            try file(prefix + "\(key)/__grp__\(name).json", group),
        ]
    }

    func layer(_ entries: [TarEntry]) -> LayerIndex {
        let digest = SHA256Hasher.digest(Data(entries.map(\.path).joined(separator: "\n").utf8))
        return LayerIndex(layer: digest, entries: entries)
    }

    func image(_ name: String, _ layers: [LayerIndex], targets: String? = nil) -> CacheImage {
        var labels = ["cache.triton.image/entry-count": "1"]
        if let targets { labels[CacheLabels.tritonSummary] = targets }
        return CacheImage(
            name: name, digest: SHA256Hasher.digest(Data(name.utf8)),
            layers: layers.map { Descriptor(mediaType: MediaType.ociLayerGzip, digest: $0.layer, size: 1) },
            labels: labels)
    }

    func mount(
        _ images: [CacheImage], layers: [LayerIndex], filter: KernelFilter = .all, root: String = "/mnt/triton",
        budget: Duration = .seconds(10)
    ) -> (ImageFileSystem, FixtureProvider) {
        let provider = FixtureProvider(store: store, layers: layers)
        let options = ImageFileSystem.Options(
            tree: .init(consumerRoot: root, filter: filter, worldReadable: true), owner: (1000, 1000),
            retryDelay: .milliseconds(200), operationBudget: budget)
        return (
            ImageFileSystem(images: images, provider: provider, options: options, status: { _ in Data("{}".utf8) }),
            provider
        )
    }
}

let caller = Caller(uid: 1000, gid: 1000, pid: 1)

extension ImageFileSystem {
    /// Whether every image loaded within a generous guard (background loads settle on their own time).
    func settles() -> Bool {
        let end = ContinuousClock.now + .seconds(10)
        while !isLoaded {
            if ContinuousClock.now > end { return false }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return true
    }

    func path(_ path: String) throws -> Attributes {
        var ino = ImageFileSystem.rootIno
        var attributes = try attributes(ino: ino, caller: caller)
        for component in path.split(separator: "/") {
            attributes = try lookup(parent: ino, name: String(component), caller: caller)
            ino = attributes.ino
        }
        return attributes
    }

    func contents(_ path: String) throws -> String {
        let attributes = try self.path(path)
        let opened = try open(ino: attributes.ino, flags: O_RDONLY, caller: caller)
        defer { release(handle: opened.handle) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(attributes.size) + 16, alignment: 8)
        defer { buffer.deallocate() }
        let count = try read(handle: opened.handle, offset: 0, into: buffer)
        return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<count]), as: UTF8.self)
    }

    func names(_ path: String) throws -> [String] {
        try listDirectory(ino: try self.path(path).ino, caller: caller).map(\.name).filter { $0 != "." && $0 != ".." }
    }
}

@Suite struct ImageFileSystemTests {
    @Test func nothingIsFetchedUntilTheFirstLookupBelowTheRoot() throws {
        let f = try Fixture()
        let layer = f.layer(try f.kernel("KEYA", name: "add", target: "cuda:90:32"))
        let (fs, provider) = f.mount([f.image("a", [layer])], layers: [layer])
        _ = try fs.attributes(ino: ImageFileSystem.rootIno, caller: caller)
        _ = try fs.path(".mcvfs/status.json")
        #expect(provider.requests.withLock { $0 }.isEmpty)
        _ = try fs.path("KEYA")
        #expect(provider.requests.withLock { $0 } == [layer.layer])
        _ = try fs.names("")
        #expect(provider.requests.withLock { $0 }.count == 1)
    }

    @Test func groupFilesNameChildrenUnderTheConsumerRootAndReportTheRewrittenSize() throws {
        let f = try Fixture()
        let layer = f.layer(try f.kernel("KEYA", name: "add", target: "cuda:90:32"))
        let (fs, _) = f.mount([f.image("a", [layer])], layers: [layer], root: "/root/.triton/cache")
        let text = try fs.contents("KEYA/__grp__add.json")
        #expect(text.contains("\"/root/.triton/cache/KEYA/add.bin\""))
        #expect(!text.contains("/opt/build"))
        #expect(try fs.path("KEYA/__grp__add.json").size == Int64(text.utf8.count))
        #expect(try fs.contents("KEYA/add.bin") == "binary of add for cuda:90:32")
    }

    @Test func kernelsForOtherTargetsAreHiddenAndHelpersFollowTheirBackend() throws {
        let f = try Fixture()
        var entries = try f.kernel("CUDA90", name: "add", target: "cuda:90:32")
        entries += try f.kernel("CUDA80", name: "add", target: "cuda:80:32")
        entries += try f.kernel("HIP", name: "add", target: "hip:gfx942:64")
        entries += [
            try f.file("io.triton.cache/UTILS/cuda_utils.so", "so"),
            try f.file("io.triton.cache/HIPU/hip_utils.so", "so"),
        ]
        let layer = f.layer(entries)
        let filter = KernelFilter.targets([GPUTarget(backend: .cuda, arch: "90")])
        let (fs, _) = f.mount([f.image("mixed", [layer])], layers: [layer], filter: filter)
        #expect(try fs.names("") == ["CUDA90", "UTILS"])
        #expect(fs.report?.kernelsHidden == 2)
    }

    @Test func theFirstImageGivesAKeyWholeAndOtherBytesForItAreReported() throws {
        let f = try Fixture()
        let first = f.layer([f.directory("io.triton.cache/K"), try f.file("io.triton.cache/K/a", "first a")])
        let second = f.layer([
            f.directory("io.triton.cache/K"), try f.file("io.triton.cache/K/a", "second a"),
            try f.file("io.triton.cache/K/b", "second b"),
        ])
        let (fs, _) = f.mount([f.image("1", [first]), f.image("2", [second])], layers: [first, second])
        #expect(try fs.contents("K/a") == "first a")
        #expect(try fs.names("K") == ["a"])
        #expect(fs.settles(), "image 2 loads on its own time: nothing waited for it")
        #expect(fs.report?.conflicts == [.init(key: "K", served: "1", other: "2")])
    }

    @Test func aNodeImageNeverChangesAKeyABaseImageGivesWhateverItsTagOrSignature() throws {
        let f = try Fixture()
        let base = f.layer([try f.file("io.triton.cache/K/a.cubin", "base")])
        let node = f.layer([
            try f.file("io.triton.cache/K/a.cubin", "evil"), try f.file("io.triton.cache/NEW/n.cubin", "new"),
        ])
        let refreshed = f.layer([
            try f.file("io.triton.cache/K/a.cubin", "evil too"), try f.file("io.triton.cache/NEW2/n.cubin", "new 2"),
        ])
        // The node image's tag sorts first; a refresh then brings "0", a base-looking name that sorts first too.
        let (fs, _) = f.mount(
            [f.image("0-0123456789abcdef", [node]), f.image("cuda-sm90", [base])], layers: [base, node, refreshed])
        #expect(try fs.contents("K/a.cubin") == "base")
        #expect(try fs.contents("NEW/n.cubin") == "new", "a node image adds KEYs")
        #expect(fs.settles())
        fs.add(images: [f.image("0", [refreshed])])
        _ = fs.load()
        #expect(try fs.contents("NEW2/n.cubin") == "new 2")
        #expect(try fs.contents("K/a.cubin") == "base")
        #expect(fs.settles())
        #expect(
            fs.report?.conflicts == [
                .init(key: "K", served: "cuda-sm90", other: "0-0123456789abcdef"),
                .init(key: "K", served: "cuda-sm90", other: "0"),
            ])
        #expect(
            fs.imageStatus.map(\.precedence) == [
                "added (batch 0, \(fs.images[0].digest.hex.prefix(12)))", "base #1",
                "added (batch 1, \(fs.images[2].digest.hex.prefix(12)))",
            ])
    }

    @Test func vllmHashDirectoriesAreKeysUnderTheSharedRoot() throws {
        let f = try Fixture()
        let root = "io.vllm.cache/torch_compile_cache"
        let base = f.layer([try f.file("\(root)/h1/rank_0_0/model.bin", "base h1")])
        let node = f.layer([
            try f.file("\(root)/h1/rank_0_0/model.bin", "evil h1"), try f.file("\(root)/h1/rank_0_0/extra", "x"),
            try f.file("\(root)/h2/rank_0_0/model.bin", "node h2"),
        ])
        let (fs, _) = f.mount(
            [f.image("0-0123456789abcdef", [node]), f.image("vllm", [base])], layers: [base, node])
        #expect(try fs.contents("torch_compile_cache/h1/rank_0_0/model.bin") == "base h1")
        #expect(try fs.names("torch_compile_cache/h1/rank_0_0") == ["model.bin"], "nothing of the node's copy")
        #expect(try fs.contents("torch_compile_cache/h2/rank_0_0/model.bin") == "node h2")
        #expect(fs.settles())
        #expect(
            fs.report?.conflicts == [.init(key: "torch_compile_cache/h1", served: "vllm", other: "0-0123456789abcdef")])
    }

    @Test func whiteoutsInUpperLayersHideLowerFiles() throws {
        let f = try Fixture()
        let lower = f.layer([
            f.directory("io.triton.cache/K"), try f.file("io.triton.cache/K/gone", "x"),
            try f.file("io.triton.cache/K/kept", "y"),
        ])
        let upper = f.layer([f.whiteout("io.triton.cache/K/gone")])
        let (fs, _) = f.mount([f.image("a", [lower, upper])], layers: [lower, upper])
        #expect(try fs.names("K") == ["kept"])
        #expect(throws: FSError.notFound) { try fs.path("K/gone") }
    }

    @Test func onlyTheCacheRootsOfTheLayerAreServed() throws {
        let f = try Fixture()
        let layer = f.layer([
            try f.file("io.triton.manifest/manifest.json", "{}"), try f.file("etc/passwd", "root"),
            try f.file("io.vllm.cache/torch_compile_cache/h/rank_0_0/vllm_compile_cache.py", "{}"),
            try f.file("io.triton.cache/K/a", "a"),
        ])
        let (fs, _) = f.mount([f.image("a", [layer])], layers: [layer])
        #expect(try fs.names("") == ["K", "torch_compile_cache"])
    }

    @Test func tritonsMakedirsOnAnExistingKeyGetsEEXISTAndWritesGetEROFS() throws {
        let f = try Fixture()
        let layer = f.layer(try f.kernel("KEYA", name: "add", target: "cuda:90:32"))
        let (fs, _) = f.mount([f.image("a", [layer])], layers: [layer])
        #expect(throws: FSError.exists) {
            try fs.makeDirectory(parent: ImageFileSystem.rootIno, name: "KEYA", mode: 0o755, caller: caller)
        }
        #expect(throws: FSError.readOnly) {
            try fs.makeDirectory(parent: ImageFileSystem.rootIno, name: "NEW", mode: 0o755, caller: caller)
        }
        let file = try fs.path("KEYA/add.bin")
        #expect(throws: FSError.readOnly) { try fs.open(ino: file.ino, flags: O_RDWR, caller: caller) }
    }

    @Test func theControlDirectoryIsReachableButNotListed() throws {
        let f = try Fixture()
        let layer = f.layer(try f.kernel("KEYA", name: "add", target: "cuda:90:32"))
        let (fs, _) = f.mount([f.image("a", [layer])], layers: [layer])
        #expect(try !fs.names("").contains(".mcvfs"))
        #expect(try fs.contents(".mcvfs/status.json") == "{}")
    }

    @Test func aFailedLoadAnswersUnavailableAndIsRetriedLater() throws {
        let f = try Fixture()
        let layer = f.layer(try f.kernel("KEYA", name: "add", target: "cuda:90:32"))
        let (fs, provider) = f.mount([f.image("a", [layer])], layers: [layer])
        provider.failing.withLock { $0 = true }
        #expect(throws: FSError.self) { try fs.path("KEYA") }
        #expect(throws: FSError.self) { try fs.path("KEYA") }
        #expect(provider.requests.withLock { $0 }.count == 1, "a second access inside the retry delay must not refetch")
        provider.failing.withLock { $0 = false }
        Thread.sleep(forTimeInterval: 0.3)
        #expect(try fs.path("KEYA").kind == .directory)
    }
}

/// A mount resolves each top-level directory when it is first looked up, not all of them at load.
@Suite struct LazyResolutionTests {
    @Test func lookingUpOneKernelReadsOnlyThatKernelsMetadata() throws {
        let f = try Fixture()
        let a = try f.kernel("KEYA", name: "add", target: "cuda:90:32")
        let b = try f.kernel("KEYB", name: "mul", target: "cuda:90:32")
        let layer = f.layer(a + b)
        let (fs, provider) = f.mount([f.image("a", [layer])], layers: [layer])
        #expect(try fs.contents("KEYA/add.bin") == "binary of add for cuda:90:32")
        let read = Set(provider.reads.withLock { $0 })
        #expect(!read.isEmpty)
        #expect(read.isSubset(of: Set(a.compactMap(\.content))))
        #expect(fs.report?.kernelsShown == 1)

        // Listing the root resolves the rest, after one prefetch of their metadata.
        #expect(try fs.names("") == ["KEYA", "KEYB"])
        #expect(fs.report?.kernelsShown == 2)
        let prefetched = provider.prefetched.withLock { $0 }
        #expect(prefetched.count == 1)
        #expect(Set(prefetched.first ?? []).isSubset(of: Set(b.compactMap(\.content))))
        #expect(!(prefetched.first ?? []).isEmpty)
    }

    @Test func aKernelForAnotherGPUIsNotFoundByLookupOrListing() throws {
        let f = try Fixture()
        let layer = f.layer(
            try f.kernel("CUDA90", name: "add", target: "cuda:90:32")
                + (try f.kernel("CUDA80", name: "add", target: "cuda:80:32")))
        let filter = KernelFilter.targets([GPUTarget(backend: .cuda, arch: "90")])
        let (fs, _) = f.mount([f.image("a", [layer])], layers: [layer], filter: filter)
        #expect(throws: FSError.notFound) { try fs.path("CUDA80") }
        #expect(fs.report?.kernelsHidden == 1)
        #expect(try fs.names("") == ["CUDA90"])
        #expect(throws: FSError.notFound) { try fs.path("CUDA80/add.bin") }
    }

    @Test func aFailedResolutionAnswersAtOnceUntilTheRetryDelayThenRetries() throws {
        let f = try Fixture()
        let layer = f.layer(try f.kernel("KEYA", name: "add", target: "cuda:90:32"))
        let (fs, provider) = f.mount([f.image("a", [layer])], layers: [layer])
        provider.failingReads.withLock { $0 = true }
        #expect(throws: FSError.self) { try fs.path("KEYA") }
        let attempts = provider.reads.withLock { $0.count }
        #expect(throws: FSError.self) { try fs.path("KEYA") }
        #expect(provider.reads.withLock { $0.count } == attempts, "retried within the retry delay")
        provider.failingReads.withLock { $0 = false }
        Thread.sleep(forTimeInterval: 0.3)  // past the mount's 200 ms retry delay
        #expect(try fs.path("KEYA").kind == .directory)
        #expect(try fs.contents("KEYA/add.bin") == "binary of add for cuda:90:32")
    }
}
