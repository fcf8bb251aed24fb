import BlobCache
import Foundation
import ImageFS
import LayerArchive
import OCI
import TestSupport
import Testing

@testable import ImageBuilder

/// Extraction goes through the same tree a mount serves: build an image from a fixture, index its layer as a
/// mount would, then export.
@Suite struct TreeExporterTests {
    struct Setup {
        let dir: TemporaryDirectory
        let store: DirectoryBlobStore
        let image: CacheImage
        let index: LayerIndex
    }

    func setup(_ caches: [String]) throws -> Setup {
        let dir = try TemporaryDirectory()
        let source = dir.url.appendingPathComponent("source").path
        for cache in caches { try dir.copy(cache, to: "source") }
        let builder = ImageBuilder(scan: try CacheScan(scanning: source), options: .init())
        let built = try builder.build(try #require(builder.plans().first), in: dir.url)
        let store = try DirectoryBlobStore(root: dir.url.appendingPathComponent("store"))
        let index = try LayerUnpacker(store: store).index(
            layer: built.layer.descriptor.digest, blobPath: built.layer.path,
            mediaType: built.layer.descriptor.mediaType)
        let labels = try ImageConfig(parsing: built.config).labels
        let image = CacheImage(
            name: "t", digest: built.manifestDescriptor.digest, layers: [built.layer.descriptor], labels: labels)
        return Setup(dir: dir, store: store, image: image, index: index)
    }

    func export(_ setup: Setup, filter: KernelFilter, into target: String) throws -> (
        TreeExporter.Report, ImageTreeBuilder.Report
    ) {
        let pack = try LayerPack(
            index: setup.index, file: MappedFile(path: try #require(setup.store.packPath(for: setup.index.layer))))
        var builder = ImageTreeBuilder(
            options: .init(consumerRoot: target, filter: filter, worldReadable: false),
            readBlob: { try #require(pack.data(of: $0)) })
        builder.add(layers: [setup.index], image: setup.image)
        let tree = builder.build(rootIno: 1, firstIno: 16)
        let report = try TreeExporter(
            tree: tree, source: { .mapped(MappedRegion(bytes: try #require(pack.region(of: $0)), owner: pack)) }
        ).export(into: target)
        return (report, tree.report)
    }

    @Test func extractsCompatibleKernelsWithGroupFilesNamingTheTarget() throws {
        let s = try setup([Fixtures.cuda90, Fixtures.hip942])
        let target = s.dir.url.appendingPathComponent("out/cache").path
        let (report, built) = try export(s, filter: .targets([GPUTarget(backend: .cuda, arch: "90")]), into: target)
        #expect(built.kernelsShown == 6)
        #expect(built.kernelsHidden == 6)
        #expect(report.kept.isEmpty)
        let keys = try FileManager.default.contentsOfDirectory(atPath: target).sorted()
        #expect(keys == (try FileManager.default.contentsOfDirectory(atPath: Fixtures.cuda90)).sorted())
        for key in keys {
            for name in try FileManager.default.contentsOfDirectory(atPath: Fixtures.cuda90 + "/" + key) {
                let extracted = try Data(contentsOf: URL(fileURLWithPath: "\(target)/\(key)/\(name)"))
                if name.hasPrefix("__grp__") {
                    let json = try JSONSerialization.jsonObject(with: extracted) as! [String: Any]
                    let children = json["child_paths"] as! [String: String]
                    #expect(!children.isEmpty)
                    for (child, path) in children { #expect(path == "\(target)/\(key)/\(child)") }
                } else {
                    #expect(
                        extracted == (try Data(contentsOf: URL(fileURLWithPath: "\(Fixtures.cuda90)/\(key)/\(name)"))))
                }
            }
        }
        // Nothing of the staging directory is left behind.
        #expect(!keys.contains { $0.hasPrefix(".mcvfs-extract") })
    }

    @Test func existingEntriesAreKeptAndSymlinksInTheTargetAreNotFollowed() throws {
        let s = try setup([Fixtures.mcvCuda])
        let target = s.dir.url.appendingPathComponent("out").path
        let key = Fixtures.mcvCudaKey
        try FileManager.default.createDirectory(atPath: target + "/" + key, withIntermediateDirectories: true)
        try Data("mine".utf8).write(to: URL(fileURLWithPath: "\(target)/\(key)/add_kernel.ptx"))
        // A symlink where the exporter will create a file: it must not write through it.
        let victim = s.dir.url.appendingPathComponent("victim").path
        try Data("untouched".utf8).write(to: URL(fileURLWithPath: victim))
        try FileManager.default.createSymbolicLink(
            atPath: "\(target)/\(key)/add_kernel.cubin", withDestinationPath: victim)
        let (report, _) = try export(s, filter: .all, into: target)
        #expect(Set(report.kept) == ["\(key)/add_kernel.ptx", "\(key)/add_kernel.cubin"])
        #expect(try String(contentsOfFile: "\(target)/\(key)/add_kernel.ptx", encoding: .utf8) == "mine")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "untouched")
        #expect(FileManager.default.fileExists(atPath: "\(target)/\(key)/add_kernel.json"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: target) == [key])
    }

    @Test func aCorruptStoreBlobFailsTheExtraction() throws {
        let s = try setup([Fixtures.mcvCuda])
        let file = try #require(s.index.entries.first { $0.path.hasSuffix("add_kernel.ptx") })
        let content = try #require(file.content)
        let path = try #require(s.store.packPath(for: s.index.layer))
        chmod(path, 0o644)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(try #require(s.index.pack?.offsets[content])))
        handle.write(Data("tampered".utf8))  // the same size: only the digest tells
        try handle.close()
        #expect(throws: ExportError.self) {
            try export(s, filter: .all, into: s.dir.url.appendingPathComponent("out").path)
        }
    }

    @Test func anUnavailableContentReadsAsTheErrorLineSaysIt() {
        #expect(
            ExportError.contentUnavailable(digest: "sha256:0123abcd", path: "io.triton.cache/K/k.cubin", reason: "gone")
                .description == "content sha256:0123abcd of io.triton.cache/K/k.cubin is not available: gone")
    }
}
