import Foundation
import OCI
import Synchronization

/// The merged, filtered, relocated tree of every image a mount uses.
///
/// The root's entries exist from the start; what lies under each top-level name (a Triton `<KEY>/` directory,
/// vLLM's `torch_compile_cache/`) is resolved on its first lookup, reading only that directory's kernel metadata
/// and group files, so the time to the first kernel does not grow with the number of kernels in the image. Nodes
/// are only ever added; inode numbers are stable for the mount's life.
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

    private struct Pending {
        var contributions: [SubtreeResolver.Contribution]
        var lastFailure: (at: ContinuousClock.Instant, reason: String)?
    }

    private struct State {
        /// Slot 0 is the root; every other node is stored at `ino - firstIno`.
        var nodes: [Node]
        /// Top-level names not resolved yet, by inode.
        var pending: [UInt64: Pending]
        var report = ImageTreeBuilder.Report()
    }

    public let rootIno: UInt64
    private let firstIno: UInt64
    private let resolver: SubtreeResolver
    private let prefetch: @Sendable ([Digest]) -> Void
    private let retryDelay: Duration
    // Lock order: a top-level name's gate (held across its resolution: the single flight), then `state`.
    private let state: Mutex<State>
    private let gates = Mutex<[UInt64: NSLock]>([:])

    init(
        rootIno: UInt64, firstIno: UInt64, topLevel: [(name: String, contributions: [SubtreeResolver.Contribution])],
        resolver: SubtreeResolver, prefetch: @escaping @Sendable ([Digest]) -> Void, retryDelay: Duration
    ) {
        self.rootIno = rootIno
        self.firstIno = firstIno
        self.resolver = resolver
        self.prefetch = prefetch
        self.retryDelay = retryDelay
        var root = Node(
            ino: rootIno, parent: rootIno, name: "", kind: .directory, permissions: 0o755, size: 0, modified: 0,
            content: nil, linkTarget: nil, children: [:], listing: [])
        var nodes: [Node] = []
        var pending: [UInt64: Pending] = [:]
        for (offset, top) in topLevel.sorted(by: { $0.name < $1.name }).enumerated() {
            let ino = firstIno + UInt64(offset) + 1
            let file =
                top.contributions.lazy.compactMap { $0.entries.first { $0.path == top.name }?.file }.first
                ?? LayerFile(kind: .directory, permissions: 0o755, size: 0, modified: 0)
            nodes.append(
                Self.node(
                    ino: ino, parent: rootIno, name: top.name, file: file, rewritten: nil,
                    directoryPermissions: resolver.directoryPermissions))
            pending[ino] = Pending(contributions: top.contributions)
            root.children[top.name] = ino
            root.listing.append(top.name)
        }
        root.permissions = resolver.directoryPermissions(0o755)
        self.state = Mutex(State(nodes: [root] + nodes, pending: pending))
    }

    public func node(_ ino: UInt64) -> Node? {
        state.withLock { Self.node(ino, in: $0, firstIno: firstIno, rootIno: rootIno) }
    }

    /// The child `name` of `parent`; a top-level name is resolved first (nil when it holds only kernels for
    /// other GPUs).
    public func child(of parent: UInt64, named name: String) throws(FSError) -> Node? {
        if parent == rootIno, let ino = node(rootIno)?.children[name] { try resolve(ino) }
        return state.withLock { state in
            Self.node(parent, in: state, firstIno: firstIno, rootIno: rootIno)?.children[name].flatMap {
                Self.node($0, in: state, firstIno: firstIno, rootIno: rootIno)
            }
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
    /// together first. A name that fails to resolve does not stop the others; the first failure is thrown.
    public func resolveAll() throws(FSError) {
        let pending = state.withLock { $0.pending }
        guard !pending.isEmpty else { return }
        prefetch(pending.values.flatMap { SubtreeResolver.metadata(of: $0.contributions) })
        var firstFailure: FSError?
        for ino in pending.keys.sorted() {
            do { try resolve(ino) } catch { firstFailure = firstFailure ?? error }
        }
        if let firstFailure { throw firstFailure }
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

    private func resolve(_ top: UInt64) throws(FSError) {
        guard state.withLock({ $0.pending[top] != nil }) else { return }
        let gate = gates.withLock { gates in
            if let gate = gates[top] { return gate }
            let gate = NSLock()
            gates[top] = gate
            return gate
        }
        gate.lock()
        defer { gate.unlock() }
        guard let pending = state.withLock({ $0.pending[top] }) else { return }
        if let failure = pending.lastFailure, ContinuousClock.now - failure.at < retryDelay {
            throw .unavailable(reason: failure.reason)
        }
        var report = ImageTreeBuilder.Report()
        let entries: [SubtreeResolver.Entry]
        do { entries = try resolver.resolve(pending.contributions, report: &report) } catch {
            let reason = String(describing: error)
            state.withLock { $0.pending[top]?.lastFailure = (ContinuousClock.now, reason) }
            throw error as? FSError ?? .unavailable(reason: reason)
        }
        state.withLock { state in
            attach(entries, at: top, in: &state)
            state.pending[top] = nil
            state.report.kernelsShown += report.kernelsShown
            state.report.kernelsHidden += report.kernelsHidden
            state.report.groupFilesRelocated += report.groupFilesRelocated
        }
        gates.withLock { _ = $0.removeValue(forKey: top) }
    }

    /// Adds a resolved top-level name's entries below its node, or removes the name when nothing of it shows.
    private func attach(_ entries: [SubtreeResolver.Entry], at top: UInt64, in state: inout State) {
        let topIndex = Int(top - firstIno)
        let name = state.nodes[topIndex].name
        guard let first = entries.first, first.path == name else {
            state.nodes[0].children[name] = nil
            state.nodes[0].listing.removeAll { $0 == name }
            return
        }
        state.nodes[topIndex] = Self.node(
            ino: top, parent: rootIno, name: name, file: first.file, rewritten: first.rewritten,
            directoryPermissions: resolver.directoryPermissions)
        var inoByPath = [name: top]
        for entry in entries.dropFirst() {
            let (directory, childName) = SubtreeResolver.split(entry.path)
            // A path below a name that is not a directory here (a file in an earlier image) does not show.
            guard let parent = inoByPath[directory] else { continue }
            let ino = firstIno + UInt64(state.nodes.count)
            let node = Self.node(
                ino: ino, parent: parent, name: childName, file: entry.file, rewritten: entry.rewritten,
                directoryPermissions: resolver.directoryPermissions)
            if node.kind == .directory { inoByPath[entry.path] = ino }
            state.nodes.append(node)
            let parentIndex = Int(parent - firstIno)
            state.nodes[parentIndex].children[childName] = ino
            state.nodes[parentIndex].listing.append(childName)
        }
    }

    private static func node(
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

    private static func node(_ ino: UInt64, in state: State, firstIno: UInt64, rootIno: UInt64) -> Node? {
        if ino == rootIno { return state.nodes.first }
        guard ino > firstIno, ino - firstIno < UInt64(state.nodes.count) else { return nil }
        return state.nodes[Int(ino - firstIno)]
    }
}
