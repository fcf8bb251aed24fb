import BlobCache
import Foundation
import LayerArchive
import OCI
import Synchronization
import TimeBudget

#if canImport(Glibc)
    import Glibc
#endif

/// The read-only filesystem of a mount: the merged tree of the mount's images, each loaded on first use.
///
/// Mounting costs no layer download: the root directory exists from the start, and the first lookup or listing
/// below it starts loading every image, each on its own, in the background. One image that is slow, failing or
/// malformed affects only the names that it alone could provide: the names of the others serve from the images
/// in the tree (a first lookup waits, once and within its budget, only for the images in their first load that
/// rank before the first image that has the name, or alike: `Precedence`); a name no loaded image has answers
/// `notFound` (ENOENT: Triton's `makedirs` raises on EIO), whether an image that might hold it is failing, still
/// loading, or every image is loaded; so does a KEY the images of one rank disagree on (withheld). A failed image is retried by the first access after `retryDelay`, in the background.
/// Every operation ends within `operationBudget`.
public final class ImageFileSystem: FileSystem {
    public static let rootIno: UInt64 = 1
    static let controlIno: UInt64 = 2
    static let statusIno: UInt64 = 3
    static let hotSetIno: UInt64 = 4
    static let hotSetsIno: UInt64 = 5
    static let firstTreeIno: UInt64 = 16
    /// The hidden directory that exposes the mount's status; never listed, always reachable by name.
    public static let controlName = ".mcvfs"

    /// The hot-set files of the control directory (`HotSetRecorder`).
    public enum HotSetFiles {
        public static let text = "hot-set"
        public static let json = "hot-sets.json"
    }

    public struct Options: Sendable {
        public var tree: ImageTreeBuilder.Options
        public var owner: (uid: UInt32, gid: UInt32)
        /// How long a failed image (or top-level name) answers its failure at once before an access retries it.
        public var retryDelay: Duration
        /// Files of at least this many bytes (shared objects excepted) are served with direct I/O (nil: never).
        /// Their reads then copy once, from the blob's pages to the reader, and the kernel keeps no second copy in
        /// the mount's page cache; they can be mapped privately but not `MAP_SHARED` (ENODEV: allowing it needs
        /// `FUSE_DIRECT_IO_ALLOW_MMAP`, which libfuse 3.14 cannot negotiate).
        public var directIOFrom: Int64?
        /// The most one operation may take when its caller bound no `Deadline`: waiting for images, and every
        /// registry request made for it (the FUSE bridge binds the same budget per request).
        public var operationBudget: Duration
        /// Told of each image that failed to load.
        public var log: @Sendable (String) -> Void

        public init(
            tree: ImageTreeBuilder.Options, owner: (uid: UInt32, gid: UInt32), retryDelay: Duration = .seconds(5),
            directIOFrom: Int64? = nil, operationBudget: Duration = .seconds(21),
            log: @escaping @Sendable (String) -> Void = { _ in }
        ) {
            self.tree = tree
            self.owner = owner
            self.retryDelay = retryDelay
            self.directIOFrom = directIOFrom
            self.operationBudget = operationBudget
            self.log = log
        }
    }

    private enum OpenFile {
        case descriptor(Int32)
        /// A blob mapped whole (read-only, shared with the page cache); unmapped at release.
        case mapped(Mapping)
        case bytes(Data)
        /// A file in place in a mapping the provider owns (a layer's pack), kept mapped by the handle.
        case region(MappedRegion)
    }

    /// Read-only memory that stays mapped until its handle's `release`, which the kernel sends only after the
    /// handle's last read: sharing the pointer between worker threads is safe.
    private struct Mapping: @unchecked Sendable {
        let bytes: UnsafeRawBufferPointer
    }

    private struct Handles {
        var next: UInt64 = 1
        var open: [UInt64: OpenFile] = [:]

        mutating func insert(_ file: OpenFile) -> UInt64 {
            defer { next += 1 }
            open[next] = file
            return next
        }
    }

    private let imageSet: ImageSet
    private let tree: ImageTree
    private let provider: any LayerProvider
    /// What readers opened, for `.mcvfs/hot-set` and `mcvfs export --hot-set`.
    public let hotSet = HotSetRecorder()
    private let options: Options
    /// Renders `status.json` for a viewer: nil for root and the mount's owner, who see every user's part;
    /// otherwise that uid, who sees only its own.
    private let statusDocument: @Sendable (_ viewer: UInt32?) -> Data
    private let mounted = Int64(Date().timeIntervalSince1970)
    private let handles = Mutex<Handles>(Handles())

    /// - Parameters:
    ///   - batches: when the node first used each image, for their precedence (`Precedence.batch`; absent: at
    ///     once, as on a node's first mount).
    ///   - status: renders `/.mcvfs/status.json` on each open, for a viewer (nil: everything; a uid: what that
    ///     user may see, its own upper and nobody else's).
    public init(
        images: [CacheImage], batches: [Digest: Int] = [:], provider: any LayerProvider, options: Options,
        status: @escaping @Sendable (_ viewer: UInt32?) -> Data
    ) {
        self.provider = provider
        self.options = options
        self.statusDocument = status
        imageSet = ImageSet(
            images: images, batches: batches, provider: provider, retryDelay: options.retryDelay,
            budget: options.operationBudget,
            log: options.log)
        tree = ImageTree(
            rootIno: Self.rootIno, firstIno: Self.firstTreeIno,
            resolver: ImageTreeBuilder(options: options.tree, readBlob: { try provider.bytes(of: $0).data() })
                .resolver(),
            prefetch: { provider.prefetch($0) }, retryDelay: options.retryDelay, images: imageSet, log: options.log)
    }

    /// The mount's images, in merge order.
    public var images: [CacheImage] { imageSet.images }

    /// Where each image stands (loaded, loading, failed with its error and next retry), for status and metrics.
    public var imageStatus: [ImageSet.Status] { imageSet.statuses }

    /// What the tree resolved so far.
    public var report: ImageTreeBuilder.Report? { tree.report }

    /// Whether every image is loaded.
    public var isLoaded: Bool { imageSet.allLoaded }

    /// Stores prefetched metadata still held in memory (also done in the background after each load); call at
    /// unmount so a later mount over the same cache fetches nothing again.
    public func persistPrefetched() { provider.persistPrefetched() }

    /// The tree, after starting (in the background) the image loads that are due: images not tried yet, and
    /// failed ones whose retry delay has passed. Waiting for them is the tree's business, name by name.
    public func load() -> ImageTree {
        imageSet.startDue(into: tree)
        return tree
    }

    /// Indexes every eStargz layer of the mount's images now, in the background, rather than at their images'
    /// first lookup: the provider's prefetch (`--prefetch all`) starts from a layer's index, so a mount made long
    /// before its readers (a DaemonSet's) has their kernels local when they come. Layers without a TOC are left to
    /// the first lookup, since indexing one downloads it whole. A failure is counted in the fetch metrics and met
    /// again, and reported, by the first lookup that needs the layer.
    public func indexLazyLayers() {
        for image in imageSet.images {
            for layer in image.layers where layer.annotations?[EStargz.tocDigestAnnotation] != nil {
                DispatchQueue.global(qos: .utility).async { [provider] in
                    _ = try? provider.index(of: layer, in: image)
                }
            }
        }
    }

    /// Adds images to the served tree while it serves (a refreshed repository): they rank after the images
    /// already mounted, load on the next access, and only add names (or join names not resolved yet).
    public func add(images: [CacheImage]) {
        imageSet.append(images)
    }

    // MARK: FileSystem

    public func lookup(parent: UInt64, name: String, caller: Caller) throws(FSError) -> Attributes {
        switch (parent, name) {
        case (Self.rootIno, Self.controlName): return controlAttributes()
        case (Self.controlIno, "status.json"): return volatileAttributes(Self.statusIno, caller: caller)
        case (Self.controlIno, HotSetFiles.text): return volatileAttributes(Self.hotSetIno, caller: caller)
        case (Self.controlIno, HotSetFiles.json): return volatileAttributes(Self.hotSetsIno, caller: caller)
        case (Self.controlIno, _), (Self.statusIno, _), (Self.hotSetIno, _), (Self.hotSetsIno, _): throw .notFound
        default: break
        }
        let tree = load()
        guard let parentNode = tree.node(parent) else { throw .notFound }
        guard parentNode.kind == .directory else { throw .notDirectory }
        guard let node = try tree.child(of: parent, named: name) else { throw .notFound }
        return attributes(of: node)
    }

    public func forget(ino: UInt64, count: UInt64) {
        // The tree lives as long as the mount, so inodes need no reference counts.
    }

    public func attributes(ino: UInt64, caller: Caller) throws(FSError) -> Attributes {
        switch ino {
        case Self.controlIno: return controlAttributes()
        case Self.statusIno, Self.hotSetIno, Self.hotSetsIno: return volatileAttributes(ino, caller: caller)
        case Self.rootIno:
            return Attributes(
                ino: ino, kind: .directory, permissions: rootPermissions, links: 2, size: 0,
                uid: options.owner.uid, gid: options.owner.gid, modified: mounted)
        default:
            guard let node = load().node(ino) else { throw .notFound }
            return attributes(of: node)
        }
    }

    public func readLink(ino: UInt64, caller: Caller) throws(FSError) -> String {
        guard let node = load().node(ino) else { throw .notFound }
        guard node.kind == .symlink, let target = node.linkTarget else { throw .invalidArgument }
        return target
    }

    public func listDirectory(ino: UInt64, caller: Caller) throws(FSError) -> [DirectoryEntry] {
        if ino == Self.controlIno {
            return [
                DirectoryEntry(ino: Self.controlIno, name: ".", kind: .directory),
                DirectoryEntry(ino: Self.rootIno, name: "..", kind: .directory),
                DirectoryEntry(ino: Self.statusIno, name: "status.json", kind: .file),
                DirectoryEntry(ino: Self.hotSetIno, name: HotSetFiles.text, kind: .file),
                DirectoryEntry(ino: Self.hotSetsIno, name: HotSetFiles.json, kind: .file),
            ]
        }
        let tree = load()
        guard let node = tree.node(ino) else { throw .notFound }
        guard node.kind == .directory else { throw .notDirectory }
        return [
            DirectoryEntry(ino: node.ino, name: ".", kind: .directory),
            DirectoryEntry(ino: node.parent, name: "..", kind: .directory),
        ] + (try tree.children(of: ino)).map { DirectoryEntry(ino: $0.ino, name: $0.name, kind: $0.kind) }
    }

    public func open(ino: UInt64, flags: Int32, caller: Caller) throws(FSError) -> OpenedFile {
        guard flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0 else { throw .readOnly }
        if let document = try controlDocument(ino, caller: caller) {
            let handle = handles.withLock { $0.insert(.bytes(document)) }
            return OpenedFile(handle: handle, keepCache: false, directIO: true)
        }
        let tree = load()
        guard let node = tree.node(ino) else { throw .notFound }
        guard node.kind == .file else { throw node.kind == .directory ? .isDirectory : .invalidArgument }
        if let top = tree.topLevelName(of: ino) { hotSet.record(top) { tree.images(providing: top) } }
        let file: OpenFile
        switch node.content {
        case .bytes(let data)?:
            file = .bytes(data)
        case .blob(let digest)?:
            // Fetched on first open (an eStargz layer), verified before it is served or stored; a file whose bytes
            // do not verify fails alone, and nothing of it is kept.
            let bytes: FileBytes
            do {
                bytes = try Deadline.ensuring(options.operationBudget) { try provider.bytes(of: digest) }
            } catch let error as FSError { throw error } catch {
                throw .unavailable(reason: "fetching file blob \(digest): \(error)")
            }
            switch bytes {
            case .held(let data):
                file = .bytes(data)
            case .mapped(let region):
                file = .region(region)
            case .stored(let path):
                let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    throw .unavailable(reason: "open \(path): \(String(cString: strerror(errno)))")
                }
                file = Self.map(fd) ?? .descriptor(fd)
            }
        case nil:
            throw .invalidArgument
        }
        let handle = handles.withLock { $0.insert(file) }
        // Shared objects never: `dlopen` maps them executable, and docs/triton-cache.md rules direct I/O out for them.
        let isSharedObject = node.name.hasSuffix(".so") || node.name.contains(".so.")
        let direct = !isSharedObject && options.directIOFrom.map { node.size >= $0 } ?? false
        return OpenedFile(handle: handle, keepCache: !direct, directIO: direct)
    }

    /// Maps a blob whole: reads are then served from the page cache's own pages, one copy fewer than `pread`
    /// into a buffer. The descriptor is closed either way once mapped; nil (descriptor kept) when mapping fails.
    private static func map(_ fd: Int32) -> OpenFile? {
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size > 0,
            let base = mmap(nil, Int(info.st_size), PROT_READ, MAP_SHARED, fd, 0), base != MAP_FAILED
        else { return nil }
        // Kernels are read front to back: a larger read-ahead keeps the disk ahead of the reader.
        _ = madvise(base, Int(info.st_size), MADV_SEQUENTIAL)
        close(fd)
        return .mapped(Mapping(bytes: UnsafeRawBufferPointer(start: base, count: Int(info.st_size))))
    }

    public func read(handle: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(FSError) -> Int {
        guard let file = handles.withLock({ $0.open[handle] }) else { throw .badHandle }
        switch file {
        case .bytes(let data): return Reads.copy(data, offset: offset, into: buffer)
        case .mapped(let mapping): return Reads.copy(mapping.bytes, offset: offset, into: buffer)
        case .region(let region): return Reads.copy(region.bytes, offset: offset, into: buffer)
        case .descriptor(let fd): return try Reads.fill(buffer, from: fd, offset: offset)
        }
    }

    public func contentBytes(handle: UInt64) -> UnsafeRawBufferPointer? {
        switch handles.withLock({ $0.open[handle] }) {
        case .mapped(let mapping)?: return mapping.bytes
        case .region(let region)?: return region.bytes
        default: return nil
        }
    }

    public func release(handle: UInt64) {
        switch handles.withLock({ $0.open.removeValue(forKey: handle) }) {
        case .descriptor(let fd)?: close(fd)
        case .mapped(let mapping)?:
            munmap(UnsafeMutableRawPointer(mutating: mapping.bytes.baseAddress), mapping.bytes.count)
        default: break
        }
    }

    public func makeDirectory(parent: UInt64, name: String, mode: UInt32, caller: Caller) throws(FSError)
        -> Attributes
    {
        // Triton calls makedirs(exist_ok=True) on every lookup: an existing name must answer EEXIST.
        if (try? lookup(parent: parent, name: name, caller: caller)) != nil { throw .exists }
        throw .readOnly
    }

    public func statistics() -> FileSystemStatistics {
        let bytes = UInt64(tree.totalFileBytes)
        return FileSystemStatistics(
            blockSize: 4096, blocks: (bytes + 4095) / 4096, freeBlocks: 0, files: UInt64(tree.count))
    }

    // MARK: Attributes

    private var rootPermissions: UInt32 { options.tree.worldReadable ? 0o755 : 0o700 }

    private func attributes(of node: ImageTree.Node) -> Attributes {
        Attributes(
            ino: node.ino, kind: node.kind, permissions: node.ino == Self.rootIno ? rootPermissions : node.permissions,
            links: node.kind == .directory ? 2 : 1, size: node.size, uid: options.owner.uid, gid: options.owner.gid,
            modified: node.modified)
    }

    private func controlAttributes() -> Attributes {
        Attributes(
            ino: Self.controlIno, kind: .directory, permissions: 0o555, links: 2, size: 0, uid: options.owner.uid,
            gid: options.owner.gid, modified: mounted)
    }

    /// Whether `caller` sees every user's part of the control files: root and the mount's owner.
    private func isPrivileged(_ caller: Caller) -> Bool { caller.uid == 0 || caller.uid == options.owner.uid }

    /// The bytes of a file of `.mcvfs/` as `caller` may see them, made afresh on each open; nil for any other
    /// inode. The hot set tells which kernels users opened: root's and the mount owner's only (its mode says so
    /// too, which `default_permissions` enforces; this holds without it).
    private func controlDocument(_ ino: UInt64, caller: Caller) throws(FSError) -> Data? {
        switch ino {
        case Self.statusIno: return statusDocument(isPrivileged(caller) ? nil : caller.uid)
        case Self.hotSetIno, Self.hotSetsIno:
            guard isPrivileged(caller) else { throw .permissionDenied }
            return ino == Self.hotSetIno ? Data(hotSet.hotSet.text.utf8) : hotSet.document
        default: return nil
        }
    }

    private func volatileAttributes(_ ino: UInt64, caller: Caller) -> Attributes {
        let size = (try? controlDocument(ino, caller: caller))??.count ?? 0
        var attributes = Attributes(
            ino: ino, kind: .file, permissions: ino == Self.statusIno ? 0o444 : 0o400, size: Int64(size),
            uid: options.owner.uid, gid: options.owner.gid, modified: Int64(Date().timeIntervalSince1970))
        attributes.isVolatile = true
        return attributes
    }
}
