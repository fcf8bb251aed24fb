import Foundation
import OCI
import SingleFlight
import Synchronization
import TimeBudget

/// The merged, filtered, relocated tree of the images a mount serves.
///
/// Images are added as they become available (`add`), each on its own: a top-level name (a Triton `<KEY>/`
/// directory, vLLM's `torch_compile_cache/`) appears at once, and what lies under it is resolved on its first
/// lookup from the images added by then (after the images in their first load settle, within the lookup's
/// deadline: `ImageSet`), reading only that directory's kernel metadata and group files. So the time to the first
/// kernel does not grow with the number of kernels, and an image that is slow or failing holds the others back
/// once, by one budget at most.
///
/// The merge rules, which hold however late an image arrives:
/// - a KEY (a Triton `<KEY>/`, a vLLM `torch_compile_cache/<hash>/`) comes whole from the first rank in the
///   mount's precedence order that has it (`Precedence`: each base image in tag order, then images published by
///   nodes and those refreshes added, a rank per batch); images of that rank that hold other bytes for it
///   withhold it (it is absent); later images add nothing under it; each image with other bytes is reported as a
///   conflict (status, metrics, log);
/// - a name not resolved yet is resolved from the images added by then, once every image still in its first load
///   that ranks before the first image that has the name, or alike, has settled (within the lookup's deadline):
///   a KEY of the base image with precedence waits for no other image;
/// - an image added after a name was resolved adds the KEYs the name lacks and changes none that exists: a
///   file, once it could be served, stays what it was;
/// - a name that is not in the tree is looked up again on every access (nothing negative is kept), so a name
///   an image adds later is found as soon as it is added.
/// Nodes are only ever added; inode numbers are stable for the mount's life.
public final class ImageTree: Sendable {
    public enum Content: Sendable, Hashable {
        /// Bytes of a verified blob in the local store.
        case blob(Digest)
        /// Bytes made by mcvfs (a relocated group file).
        case bytes(Data)
    }

    public struct Node: Sendable {
        public var ino: UInt64
        public var parent: UInt64
        public var name: String
        public var kind: NodeKind
        public var permissions: UInt32
        public var size: Int64
        public var modified: Int64
        public var content: Content?
        public var linkTarget: String?
        public var children: [String: UInt64]
        /// Child names in listing order (sorted, so `readdir` offsets stay valid between calls).
        public var listing: [String]
    }

    struct Pending {
        /// In rank order.
        var contributions: [SubtreeResolver.Contribution]
        var lastFailure: (at: ContinuousClock.Instant, reason: String)?

        mutating func insert(_ contribution: SubtreeResolver.Contribution) {
            let index =
                contributions.firstIndex { contribution.precedence < $0.precedence } ?? contributions.endIndex
            contributions.insert(contribution, at: index)
        }
    }

    struct State {
        /// Slot 0 is the root; every other node is stored at `ino - firstIno`.
        var nodes: [Node]
        /// Top-level names not resolved yet, by inode.
        var pending: [UInt64: Pending] = [:]
        /// Top-level names that resolved to nothing (every kernel for another GPU): they stay away.
        var hidden: Set<String> = []
        /// The images that have each top-level name, in the order they were added.
        var providers: [String: [String]] = [:]
        /// Who gives each KEY of the names resolved, by inode.
        var ownership: [UInt64: KeyOwnership] = [:]
        var report = ImageTreeBuilder.Report()

        /// Counts and lists conflicts found by a resolution.
        mutating func record(_ conflicts: [KeyOwnership.Conflict]) {
            guard !conflicts.isEmpty else { return }
            report.keyConflicts = (report.keyConflicts ?? 0) + conflicts.count
            let listed = report.conflicts ?? []
            report.conflicts = listed + conflicts.prefix(ImageTreeBuilder.Report.conflictsListed - listed.count)
        }
    }

    public let rootIno: UInt64
    let firstIno: UInt64
    let resolver: SubtreeResolver
    private let prefetch: @Sendable ([Digest]) -> Void
    let retryDelay: Duration
    /// The images not in the tree yet (loading, or failed): nil when the tree was given all it will ever hold.
    let images: ImageSet?
    /// Told of each conflict (`KeyOwnership.Conflict`).
    let log: @Sendable (String) -> Void
    // `state` is never held while a resolution runs (its work reads metadata, maybe from the registry); an
    // `ImageSet` lock is never held while `state` is taken.
    let state: Mutex<State>
    /// One resolution of a top-level name at a time (`resolve`); nothing is kept once it lands.
    let resolutions = SingleFlight<UInt64, Void>()

    /// - Parameter images: where images not added yet come from; a lookup of a name the tree lacks waits for
    ///   them (within the operation's deadline).
    init(
        rootIno: UInt64, firstIno: UInt64, resolver: SubtreeResolver, prefetch: @escaping @Sendable ([Digest]) -> Void,
        retryDelay: Duration, images: ImageSet? = nil, log: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.log = log
        self.rootIno = rootIno
        self.firstIno = firstIno
        self.resolver = resolver
        self.prefetch = prefetch
        self.retryDelay = retryDelay
        self.images = images
        let root = Node(
            ino: rootIno, parent: rootIno, name: "", kind: .directory,
            permissions: resolver.directoryPermissions(0o755), size: 0, modified: 0, content: nil, linkTarget: nil,
            children: [:], listing: [])
        self.state = Mutex(State(nodes: [root]))
    }

    /// Adds what one image holds under each top-level name (`ImageTreeBuilder.contributions`), by the merge
    /// rules above. Called on the loading thread: a name already resolved reads the image's metadata here.
    func add(_ contributions: [String: SubtreeResolver.Contribution]) {
        let late = state.withLock { state in
            var added: [String] = []
            var late: [(UInt64, SubtreeResolver.Contribution)] = []
            for (name, contribution) in contributions {
                state.providers[name, default: []].append(contribution.image)
                if let ino = state.nodes[0].children[name] {
                    if state.pending[ino] != nil {
                        state.pending[ino]?.insert(contribution)
                    } else {
                        late.append((ino, contribution))
                    }
                    continue
                }
                guard !state.hidden.contains(name) else { continue }
                let ino = firstIno + UInt64(state.nodes.count)
                let file =
                    contribution.entries.first { $0.path == name }?.file
                    ?? LayerFile(kind: .directory, permissions: 0o755, size: 0, modified: 0)
                state.nodes.append(
                    Self.node(
                        ino: ino, parent: rootIno, name: name, file: file, rewritten: nil,
                        directoryPermissions: resolver.directoryPermissions))
                state.pending[ino] = Pending(contributions: [contribution])
                state.nodes[0].children[name] = ino
                added.append(name)
            }
            if !added.isEmpty { state.nodes[0].listing = (state.nodes[0].listing + added).sorted() }
            return late
        }
        for (ino, contribution) in late { merge(contribution, into: ino) }
    }

    public func node(_ ino: UInt64) -> Node? {
        state.withLock { Self.node(ino, in: $0, firstIno: firstIno, rootIno: rootIno) }
    }

    /// The child `name` of `parent`; a top-level name is resolved first (nil when it holds only kernels for
    /// other GPUs). A top-level name the tree lacks waits for the images still loading (within the operation's
    /// deadline); it is nil once every image is in the tree without it.
    ///
    /// A top-level name that only a failing image might provide (one that failed to load, was still loading at
    /// the deadline, or whose subtree cannot be read now) is nil too, for now, rather than an error: Triton's
    /// `os.makedirs(<KEY>, exist_ok=True)` raises on any error but EEXIST, so an error would crash every workload
    /// that misses while one tag is broken, where "absent" makes Triton compile the kernel into the overlay, as it
    /// would with no cache. The name appears once the image recovers (the overlay's copy still wins). Counted in
    /// the report as `lookupsAbsentDuringFaults`.
    public func child(of parent: UInt64, named name: String) throws(FSError) -> Node? {
        if parent == rootIno {
            let found: Bool
            do {
                found = try withinBudget { () throws(FSError) -> Bool in
                    guard let ino = try topLevel(name) else { return false }
                    // A KEY comes from the first rank that has it, whichever loaded first: wait for the images
                    // of the first one that has it and before (every image, for vLLM's shared root).
                    images?.awaitFirstLoads(rankedUpTo: { [self] in
                        state.withLock { state in
                            guard let first = state.pending[ino]?.contributions.first else { return nil }
                            return name == String(Precedence.sharedRoot) ? .last : first.precedence.rank
                        }
                    })
                    try resolve(ino)
                    return true
                }
            } catch .unavailable {
                state.withLock { $0.report.add(ImageTreeBuilder.Report(lookupsAbsentDuringFaults: 1)) }
                return nil
            }
            guard found else { return nil }
        }
        return state.withLock { state in
            Self.node(parent, in: state, firstIno: firstIno, rootIno: rootIno)?.children[name].flatMap {
                Self.node($0, in: state, firstIno: firstIno, rootIno: rootIno)
            }
        }
    }

    /// The inode of a top-level name, waiting for images still loading while no image in the tree has it.
    private func topLevel(_ name: String) throws(FSError) -> UInt64? {
        guard let images else { return node(rootIno)?.children[name] }
        images.startDue(into: self)
        while true {
            // Read before looking: an image added after the look moves the generation past it.
            let seen = images.generation
            if let ino = node(rootIno)?.children[name] { return ino }
            guard try images.awaitChange(since: seen, into: self) else { return nil }
        }
    }

    /// The children of a directory in listing order (listing the root resolves every top-level name).
    public func children(of ino: UInt64) throws(FSError) -> [Node] {
        if ino == rootIno { try resolveAll() }
        return state.withLock { state in
            guard let directory = Self.node(ino, in: state, firstIno: firstIno, rootIno: rootIno) else { return [] }
            return directory.listing.compactMap { name in
                directory.children[name].flatMap { Self.node($0, in: state, firstIno: firstIno, rootIno: rootIno) }
            }
        }
    }

    /// Looks a slash-separated path up from the root (used by the overlay, export and tests).
    public func node(atPath path: String) throws(FSError) -> Node? {
        var current = node(rootIno)
        for component in path.split(separator: "/") {
            guard let directory = current else { return nil }
            current = try child(of: directory.ino, named: String(component))
        }
        return current
    }

    /// The top-level name `ino` lies under (itself, for a top-level node); nil for the root.
    public func topLevelName(of ino: UInt64) -> String? {
        state.withLock { state in
            var current = Self.node(ino, in: state, firstIno: firstIno, rootIno: rootIno)
            while let node = current, node.parent != rootIno {
                current = Self.node(node.parent, in: state, firstIno: firstIno, rootIno: rootIno)
            }
            return current.flatMap { $0.ino == rootIno ? nil : $0.name }
        }
    }

    /// The images that have the top-level `name`, in the order they were added.
    public func images(providing name: String) -> [String] { state.withLock { $0.providers[name] ?? [] } }

    /// Path components of `ino` from the root (empty for the root).
    public func path(of ino: UInt64) -> [String]? {
        var components: [String] = []
        var current = node(ino)
        while let node = current, node.ino != rootIno {
            components.append(node.name)
            current = self.node(node.parent)
        }
        return current == nil ? nil : components.reversed()
    }

    /// Resolves every top-level name (for a listing of the root, or an export), fetching the metadata they read
    /// together first. Images still loading are waited for (within the operation's deadline); those that failed
    /// leave their names out. A name that fails to resolve does not stop the others; the first failure is thrown.
    /// - Throws: `unavailable` also when no image is in the tree and some failed or are still loading.
    public func resolveAll() throws(FSError) {
        try withinBudget { () throws(FSError) in
            if let images {
                let missing = images.awaitLoads(into: self)
                if !missing.isEmpty, state.withLock({ $0.nodes[0].children.isEmpty }) {
                    throw .unavailable(reason: missing.joined(separator: "; "))
                }
            }
            let pending = state.withLock { $0.pending }
            guard !pending.isEmpty else { return }
            prefetch(pending.values.flatMap { SubtreeResolver.metadata(of: $0.contributions) })
            var firstFailure: FSError?
            for ino in pending.keys.sorted() {
                do throws(FSError) { try resolve(ino) } catch { firstFailure = firstFailure ?? error }
            }
            if let firstFailure { throw firstFailure }
        }
    }

    /// Kernels shown and hidden, and group files relocated, in what was resolved so far.
    public var report: ImageTreeBuilder.Report { state.withLock { $0.report } }

    public var count: Int { state.withLock { $0.nodes.count } }

    /// Bytes of the files resolved so far, plus what unresolved names hold as stored.
    public var totalFileBytes: Int64 {
        state.withLock { state in
            let resolved = state.nodes.reduce(Int64(0)) { $0 + ($1.kind == .file ? $1.size : 0) }
            let unresolved = state.pending.values.reduce(Int64(0)) { total, pending in
                total + (pending.contributions.first?.entries.reduce(Int64(0)) { $0 + $1.file.size } ?? 0)
            }
            return resolved + unresolved
        }
    }

    // MARK: Resolution

    /// Runs `body` under the operation's deadline, or under a fresh budget when the caller bound none. A tree
    /// without an image set (an export of images already local) needs no budget.
    func withinBudget<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        guard let images else { return try body() }
        return try Deadline.ensuring(images.budget, body)
    }

    static func node(
        ino: UInt64, parent: UInt64, name: String, file: LayerFile, rewritten: Data?,
        directoryPermissions: (UInt32) -> UInt32 = { $0 & 0o777 }
    ) -> Node {
        var node = Node(
            ino: ino, parent: parent, name: name, kind: .directory, permissions: file.permissions & 0o777,
            size: file.size, modified: file.modified, content: nil, linkTarget: nil, children: [:], listing: [])
        switch file.kind {
        case .directory:
            node.permissions = directoryPermissions(file.permissions)
            node.size = 0
        case .symlink(let target):
            node.kind = .symlink
            node.linkTarget = target
        case .file(let digest):
            node.kind = .file
            node.content = rewritten.map(Content.bytes) ?? .blob(digest)
            node.size = rewritten.map { Int64($0.count) } ?? file.size
        }
        return node
    }

    static func node(_ ino: UInt64, in state: State, firstIno: UInt64, rootIno: UInt64) -> Node? {
        if ino == rootIno { return state.nodes.first }
        guard ino > firstIno, ino - firstIno < UInt64(state.nodes.count) else { return nil }
        return state.nodes[Int(ino - firstIno)]
    }
}
