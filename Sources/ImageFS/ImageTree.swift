import Foundation
import OCI

/// The merged, filtered, relocated tree of every image a mount uses. Built once when the images are loaded and
/// immutable afterwards, so lookups need no lock; inode numbers are stable for the mount's life.
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

    public let rootIno: UInt64
    private let firstIno: UInt64
    private let nodes: [Node]

    init(rootIno: UInt64, firstIno: UInt64, nodes: [Node]) {
        self.rootIno = rootIno
        self.firstIno = firstIno
        self.nodes = nodes
    }

    public func node(_ ino: UInt64) -> Node? {
        if ino == rootIno { return nodes.first }
        guard ino >= firstIno, ino - firstIno < UInt64(nodes.count) else { return nil }
        return nodes[Int(ino - firstIno)]
    }

    public func child(of parent: UInt64, named name: String) -> Node? {
        node(parent)?.children[name].flatMap(node)
    }

    /// Looks a slash-separated path up from the root (used by export and tests).
    public func node(atPath path: String) -> Node? {
        var current = node(rootIno)
        for component in path.split(separator: "/") {
            current = current.flatMap { child(of: $0.ino, named: String(component)) }
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

    public var count: Int { nodes.count }

    public var totalFileBytes: Int64 { nodes.reduce(0) { $0 + ($1.kind == .file ? $1.size : 0) } }
}
