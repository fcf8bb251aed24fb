import BlobCache
import ContentHash
import Foundation
import Glibc
import LayerArchive
import OCI
import Synchronization
import TestSupport
import Testing

@testable import ImageFS

/// One image (`KEY/a.bin`, `KEY/b.txt`, `OTHER/c.txt`) under an overlay whose uppers live in a temp directory: the
/// overlay's own API, as the FUSE bridge calls it, without a mount.
final class OverlayWorld {
    static let a = "the image's binary of a"
    let directory: TemporaryDirectory
    let overlay: OverlayFileSystem
    let kernel = RecordingKernel()

    /// The image's blobs, as a provider serves them after fetching and verifying.
    final class Layers: LayerProvider {
        let store: DirectoryBlobStore
        let index: LayerIndex

        init(store: DirectoryBlobStore, index: LayerIndex) {
            self.store = store
            self.index = index
        }

        func index(of layer: Descriptor, in image: CacheImage) throws -> LayerIndex { index }
        func bytes(of content: Digest) throws -> FileBytes { .stored(path: store.path(for: content)!) }
    }

    init(isolation: OverlayFileSystem.Isolation = .perUser) throws {
        directory = try TemporaryDirectory()
        let store = try DirectoryBlobStore(root: directory.url.appendingPathComponent("store"))
        func file(_ path: String, _ text: String) throws -> TarEntry {
            let stored = try store.ingest(data: Data(text.utf8))
            return TarEntry(
                path: "io.triton.cache/" + path, kind: .file, mode: 0o644, size: Int64(text.utf8.count),
                linkTarget: nil, mtime: 1_700_000_000, content: stored.digest)
        }
        func folder(_ path: String) -> TarEntry {
            TarEntry(
                path: "io.triton.cache/" + path, kind: .directory, mode: 0o755, size: 0, linkTarget: nil, mtime: 0,
                content: nil)
        }
        let entries = [
            folder("KEY"), try file("KEY/a.bin", Self.a), try file("KEY/b.txt", "b"), folder("OTHER"),
            try file("OTHER/c.txt", "c"),
        ]
        let index = LayerIndex(layer: SHA256Hasher.digest(Data("overlay-world".utf8)), entries: entries)
        let image = CacheImage(
            name: "world", digest: SHA256Hasher.digest(Data("world".utf8)),
            layers: [Descriptor(mediaType: MediaType.ociLayerGzip, digest: index.layer, size: 1)],
            labels: ["cache.triton.image/entry-count": "1"])
        let lower = ImageFileSystem(
            images: [image], provider: Layers(store: store, index: index),
            options: .init(
                tree: .init(consumerRoot: "/mnt/triton", filter: .all, worldReadable: true), owner: (0, 0)),
            status: { _ in Data("{}".utf8) })
        overlay = try OverlayFileSystem(
            lower: lower,
            options: .init(
                upperRoot: self.directory.file("upper"), isolation: isolation, consumerRoot: "/mnt/triton"),
            owner: (0, 0))
        overlay.connect(kernel: kernel)
    }

    var upperRoot: String { directory.file("upper") }

    /// Looks a path up name by name, as the kernel does, each lookup counted.
    func lookup(_ path: String, as caller: Caller) throws(FSError) -> Attributes {
        var attributes = try overlay.attributes(ino: ImageFileSystem.rootIno, caller: caller)
        for name in path.split(separator: "/") {
            attributes = try overlay.lookup(parent: attributes.ino, name: String(name), caller: caller)
        }
        return attributes
    }

    func read(_ opened: OpenedFile) throws(FSError) -> String {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        let count = try overlay.read(handle: opened.handle, offset: 0, into: buffer)
        return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<count]), as: UTF8.self)
    }

    func contents(_ path: String, as caller: Caller) throws(FSError) -> String {
        let opened = try overlay.open(ino: try lookup(path, as: caller).ino, flags: O_RDONLY, caller: caller)
        defer { overlay.release(handle: opened.handle) }
        return try read(opened)
    }

    func write(_ text: String, to handle: UInt64, at offset: Int64 = 0) throws {
        let bytes = Array(text.utf8)
        _ = try bytes.withUnsafeBytes { try overlay.write(handle: handle, offset: offset, bytes: $0) }
    }
}

/// What the overlay asked the kernel to drop.
final class RecordingKernel: KernelCache {
    let invalidated = Mutex<[String]>([])

    func invalidateEntry(parent: UInt64, name: String, synchronously: Bool) {
        invalidated.withLock { $0.append(name) }
    }
}

let root = Caller(uid: 0, gid: 0, pid: 1)
let alice = Caller(uid: 1000, gid: 1000, pid: 2)
let bob = Caller(uid: 1001, gid: 1001, pid: 3)

@Suite struct OverlayFileSystemTests {
    @Test func lookupsAreCountedAndForgottenAndListingsTakeNone() throws {
        let world = try OverlayWorld()
        let key = try world.lookup("KEY", as: alice)
        #expect(key.ino == (try world.lookup("KEY", as: alice)).ino, "the same inode for the same name")
        _ = try world.lookup("KEY/a.bin", as: alice)
        let listed = try world.overlay.listDirectory(ino: key.ino, caller: alice)
        #expect(listed.map(\.name) == [".", "..", "a.bin", "b.txt"])
        #expect(world.overlay.report.inodes == 2, "b.txt was listed, never looked up")
        // KEY was looked up three times (once on the way to a.bin). An image file needs no parent to find its
        // path (the tree knows it), so KEY goes and comes back with its tree number.
        world.overlay.forget(ino: key.ino, count: 3)
        #expect(world.overlay.report.inodes == 1)
        let file = try world.lookup("KEY/a.bin", as: alice)
        #expect(try world.lookup("KEY", as: alice).ino == key.ino)
        world.overlay.forget(ino: file.ino, count: 2)
        world.overlay.forget(ino: key.ino, count: 2)
        #expect(world.overlay.report.inodes == 0)
    }

    @Test func directoriesLookTheSameToEveryCallerAndAreCached() throws {
        let world = try OverlayWorld()
        let seenByAlice = try world.lookup("KEY", as: alice)
        let seenByBob = try world.lookup("KEY", as: bob)
        #expect(seenByAlice == seenByBob)
        #expect(seenByAlice.permissions == 0o777 && seenByAlice.uid == 0 && !seenByAlice.isVolatile)
        #expect(!seenByAlice.nameIsVolatile, "nobody's upper hides KEY: the kernel may keep the name")
        let shared = try OverlayWorld(isolation: .shared)
        #expect(try shared.lookup("KEY", as: alice).permissions == 0o1777)
    }

    @Test func aNameIsCachedOnlyWhileItLeadsEveryCallerToTheSameInode() throws {
        let world = try OverlayWorld()
        #expect(!(try world.lookup("KEY/b.txt", as: bob)).nameIsVolatile)
        try world.overlay.removeFile(parent: try world.lookup("KEY", as: alice).ino, name: "b.txt", caller: alice)
        let forBob = try world.lookup("KEY/b.txt", as: bob)
        #expect(forBob.nameIsVolatile && forBob.isVolatile, "alice deleted it: the name now differs between them")
        #expect(throws: FSError.notFound) { try world.lookup("KEY/b.txt", as: alice) }
        let key = try world.lookup("KEY", as: alice)
        let (created, opened) = try world.overlay.create(
            parent: key.ino, name: "new.bin", mode: 0o644, flags: O_WRONLY, caller: alice)
        world.overlay.release(handle: opened.handle)
        #expect(created.nameIsVolatile, "a per-user upper's names are never cached")
        #expect(throws: FSError.notFound) { try world.lookup("KEY/new.bin", as: bob) }
    }

    @Test func aCopyUpIsTheWritersAloneAndTheKernelDropsTheImageFilesName() throws {
        let world = try OverlayWorld()
        let image = try world.lookup("KEY/a.bin", as: alice)
        let writer = try world.overlay.open(ino: image.ino, flags: O_WRONLY | O_TRUNC, caller: alice)
        #expect(writer.directIO && !writer.keepCache, "a writer's bytes never reach the image inode's pages")
        try world.write("alice's kernel", to: writer.handle)
        try world.overlay.flush(handle: writer.handle)
        world.overlay.release(handle: writer.handle)
        #expect(world.kernel.invalidated.withLock { $0 } == ["a.bin"])
        #expect(try world.contents("KEY/a.bin", as: alice) == "alice's kernel")
        #expect(try world.contents("KEY/a.bin", as: bob) == OverlayWorld.a)
        // Alice reaching the image file's inode by a name the kernel kept is served her copy, not through its pages.
        let stale = try world.overlay.open(ino: image.ino, flags: O_RDONLY, caller: alice)
        defer { world.overlay.release(handle: stale.handle) }
        #expect(try stale.directIO && world.read(stale) == "alice's kernel")
        #expect(try world.overlay.attributes(ino: image.ino, caller: alice).size == 14)
        #expect(try world.overlay.attributes(ino: image.ino, caller: bob).size == Int64(OverlayWorld.a.utf8.count))
    }

    @Test func aRenamedImageFileStandsForTheRenamersCopyAtItsNewName() throws {
        let world = try OverlayWorld()
        let key = try world.lookup("KEY", as: alice)
        let image = try world.lookup("KEY/a.bin", as: alice)
        try world.overlay.rename(
            parent: key.ino, name: "a.bin", newParent: key.ino, newName: "moved.bin", flags: 0, caller: alice)
        // The kernel moved its cached name onto the image file's inode: for alice it is now her copy.
        let opened = try world.overlay.open(ino: image.ino, flags: O_RDONLY, caller: alice)
        defer { world.overlay.release(handle: opened.handle) }
        #expect(try world.read(opened) == OverlayWorld.a)
        #expect((try world.lookup("KEY/moved.bin", as: alice)).ino != image.ino)
        #expect(throws: FSError.notFound) { try world.lookup("KEY/a.bin", as: alice) }
        #expect(try world.contents("KEY/a.bin", as: bob) == OverlayWorld.a)
        #expect(world.kernel.invalidated.withLock { $0 } == ["moved.bin"])
    }

    /// Issue 13: a reader during an O_TRUNC write saw the old bytes cut to the writer's length.
    @Test func readersKeepTheVersionTheyOpenedWhileAWriterRewritesTheFile() throws {
        let world = try OverlayWorld()
        let key = try world.lookup("KEY", as: alice)
        let (_, first) = try world.overlay.create(
            parent: key.ino, name: "k.bin", mode: 0o644, flags: O_WRONLY, caller: alice)
        try world.write(String(repeating: "o", count: 3000), to: first.handle)
        try world.overlay.flush(handle: first.handle)
        world.overlay.release(handle: first.handle)
        let file = try world.lookup("KEY/k.bin", as: alice)
        let early = try world.overlay.open(ino: file.ino, flags: O_RDONLY, caller: alice)
        #expect(early.directIO, "an upper file's reader never reads through the inode's shared pages or size")
        let writer = try world.overlay.open(ino: file.ino, flags: O_WRONLY | O_TRUNC, caller: alice)
        try world.write(String(repeating: "N", count: 1000), to: writer.handle)
        let during = try world.overlay.open(ino: file.ino, flags: O_RDONLY, caller: alice)
        #expect(try world.read(early) == String(repeating: "o", count: 3000))
        #expect(try world.read(during) == String(repeating: "o", count: 3000))
        #expect(try world.overlay.attributes(ino: file.ino, handle: during.handle, caller: alice).size == 3000)
        #expect(try world.overlay.attributes(ino: file.ino, handle: writer.handle, caller: alice).size == 1000)
        #expect(try world.overlay.attributes(ino: file.ino, caller: alice).size == 1000, "the writer's fstat")
        try world.overlay.flush(handle: writer.handle)
        world.overlay.release(handle: writer.handle)
        #expect(try world.read(early) == String(repeating: "o", count: 3000), "still the version it opened")
        #expect(try world.contents("KEY/k.bin", as: alice) == String(repeating: "N", count: 1000))
        world.overlay.release(handle: early.handle)
        world.overlay.release(handle: during.handle)
    }

    /// Issue 13: in a shared upper a user's new file landed -rw------- root root.
    @Test func aSharedUppersFilesBelongToTheirCreatorWithTheModeAsked() throws {
        let world = try OverlayWorld(isolation: .shared)
        let key = try world.lookup("KEY", as: alice)
        let (created, opened) = try world.overlay.create(
            parent: key.ino, name: "mine.bin", mode: 0o644, flags: O_WRONLY, caller: alice)
        #expect(created.uid == 1000 && created.gid == 1000 && created.permissions == 0o644)
        try world.write("data", to: opened.handle)
        try world.overlay.flush(handle: opened.handle)
        world.overlay.release(handle: opened.handle)
        var info = stat()
        #expect(lstat(world.upperRoot + "/shared/KEY/mine.bin", &info) == 0)
        #expect(info.st_uid == 1000 && info.st_gid == 1000 && info.st_mode & 0o7777 == 0o644)
        // Rewriting keeps the owner and mode; a copy of an image file keeps the image file's owner.
        let rewrite = try world.overlay.open(ino: created.ino, flags: O_WRONLY | O_TRUNC, caller: alice)
        try world.overlay.flush(handle: rewrite.handle)
        world.overlay.release(handle: rewrite.handle)
        #expect(lstat(world.upperRoot + "/shared/KEY/mine.bin", &info) == 0 && info.st_uid == 1000)
        let image = try world.lookup("KEY/b.txt", as: alice)
        let copy = try world.overlay.open(ino: image.ino, flags: O_WRONLY | O_APPEND, caller: alice)
        try world.overlay.flush(handle: copy.handle)
        world.overlay.release(handle: copy.handle)
        #expect(lstat(world.upperRoot + "/shared/KEY/b.txt", &info) == 0 && info.st_uid == 0)
        #expect(info.st_mode & 0o7777 == 0o644)
    }

    @Test func removingADirectoryLooksOnlyAsFarAsItsFirstEntry() throws {
        let world = try OverlayWorld()
        let rootIno = ImageFileSystem.rootIno
        _ = try world.overlay.makeDirectory(parent: rootIno, name: "NEW", mode: 0o755, caller: alice)
        let made = try world.lookup("NEW", as: alice)
        let (_, opened) = try world.overlay.create(
            parent: made.ino, name: "x", mode: 0o644, flags: O_WRONLY, caller: alice)
        world.overlay.release(handle: opened.handle)
        #expect(throws: FSError.notEmpty) {
            try world.overlay.removeDirectory(parent: rootIno, name: "NEW", caller: alice)
        }
        #expect(throws: FSError.notEmpty) {
            try world.overlay.removeDirectory(parent: rootIno, name: "KEY", caller: alice)
        }
        try world.overlay.removeFile(parent: made.ino, name: "x", caller: alice)
        try world.overlay.removeDirectory(parent: rootIno, name: "NEW", caller: alice)
        // An image directory whose files the caller deleted is empty for them, and gone once removed.
        let other = try world.lookup("OTHER", as: alice)
        try world.overlay.removeFile(parent: other.ino, name: "c.txt", caller: alice)
        try world.overlay.removeDirectory(parent: rootIno, name: "OTHER", caller: alice)
        #expect(throws: FSError.notFound) { try world.lookup("OTHER", as: alice) }
        #expect(try world.contents("OTHER/c.txt", as: bob) == "c")
    }
}
