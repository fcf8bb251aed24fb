import Foundation
import Glibc

/// How a path resolves for a caller, what an inode stands for, and what the kernel may cache of either.
extension OverlayFileSystem {
    /// What a path is for one caller.
    enum Resolved {
        case directory(path: [String], lower: ImageTree.Node?, upper: stat?)
        case lowerFile(path: [String], node: ImageTree.Node)
        case upperFile(path: [String], info: stat)

        var isDirectory: Bool {
            if case .directory = self { return true }
            return false
        }
    }

    /// What `path` is for this caller: the upper wins; the image shows through unless a whiteout, an opaque
    /// directory or an upper non-directory above it hides it.
    func resolve(_ path: [String], caller: Caller) throws(FSError) -> Resolved? {
        try resolve(path, in: upper(for: caller))
    }

    func resolve(_ path: [String], in upper: UpperLayer) throws(FSError) -> Resolved? {
        let tree = lower.load()
        let probe = try upper.probe(path)
        let lowerPath = path.joined(separator: "/")
        let lowerNode: ImageTree.Node?
        if probe.hidesLower {
            lowerNode = nil
        } else if probe.info != nil {
            // What the upper holds serves even while an image that may also hold the path is unavailable.
            lowerNode = try? tree.node(atPath: lowerPath)
        } else {
            lowerNode = try tree.node(atPath: lowerPath)
        }
        if let info = probe.info {
            guard Self.isDirectory(info) else { return .upperFile(path: path, info: info) }
            return .directory(path: path, lower: lowerNode?.kind == .directory ? lowerNode : nil, upper: info)
        }
        guard let node = lowerNode else { return nil }
        return node.kind == .directory
            ? .directory(path: path, lower: node, upper: nil) : .lowerFile(path: path, node: node)
    }

    /// What an inode stands for, whoever asks.
    enum Subject {
        case directory(path: [String], space: Space?)
        case lowerFile(path: [String], node: ImageTree.Node)
        case upperFile(path: [String], space: Space)
    }

    func subject(of ino: UInt64) throws(FSError) -> Subject {
        if ino == ImageFileSystem.rootIno { return .directory(path: [], space: nil) }
        guard let inode = inodes.withLock({ $0.inode(ino) }) else { throw .notFound }
        if inode.kind == .lowerFile {
            let tree = lower.load()
            guard let node = tree.node(ino), let path = tree.path(of: ino) else { throw .notFound }
            return .lowerFile(path: path, node: node)
        }
        // An unlinked inode has no path left: only its open handles reach its content.
        guard let names = inodes.withLock({ $0.names(of: ino) }) else { throw .notFound }
        let path = names.map(\.name)
        switch inode.kind {
        case .directory: return .directory(path: path, space: nil)
        case .upperDirectory(let space): return .directory(path: path, space: space)
        case .upperFile(let space): return .upperFile(path: path, space: space)
        case .lowerFile: throw .notFound
        }
    }

    /// The path of a directory inode as this caller may use it (another user's upper directory is not theirs).
    func directoryPath(_ ino: UInt64, caller: Caller) throws(FSError) -> [String] {
        guard case .directory(let path, let space) = try subject(of: ino) else { throw .notDirectory }
        if let space, space != self.space(of: caller) { throw .notFound }
        return path
    }

    /// The identity `resolved` has as the child `name` of directory `parent`, for the inode table.
    func identity(of resolved: Resolved, parent: UInt64, name: String, caller: Caller) -> OverlayInodes.Identity {
        let space = space(of: caller)
        switch resolved {
        case .directory(_, let lowerNode?, _):
            return .named(.init(parent: parent, name: name, space: nil), .directory, preferred: lowerNode.ino)
        case .directory(_, nil, _):
            return .named(.init(parent: parent, name: name, space: space), .upperDirectory(space), preferred: nil)
        case .lowerFile(_, let node):
            return .lowerFile(node.ino)
        case .upperFile:
            return .named(.init(parent: parent, name: name, space: space), .upperFile(space), preferred: nil)
        }
    }

    /// Replies that hand the kernel an inode (lookup, create, mkdir, symlink, link) go through here: the inode gets
    /// one more lookup, which the kernel gives back with `forget`.
    func reference(_ resolved: Resolved, parent: UInt64, name: String, caller: Caller) throws(FSError) -> Attributes {
        let ino = inodes.withLock {
            $0.lookedUp(identity(of: resolved, parent: parent, name: name, caller: caller))
        }
        do throws(FSError) {
            var attributes = try self.attributes(of: resolved, ino: ino, caller: caller)
            attributes.nameIsVolatile = !isCommon(resolved, caller: caller)
            // An image file some caller changed: that caller may still reach this inode by an older cached name,
            // and its attributes then describe their copy.
            if attributes.nameIsVolatile, case .lowerFile = resolved { attributes.isVolatile = true }
            return attributes
        } catch {
            forget(ino: ino, count: 1)
            throw error
        }
    }

    /// Whether a name leads every caller to the same inode, so the kernel may cache it: what the image provides and
    /// no upper hides or replaces (in a shared upper, every name). The kernel drops a name itself when it is
    /// unlinked, removed or renamed; when a copy-up changes what an image file's name means for one caller, the
    /// overlay tells it to (`nameChanged`), and later lookups see the upper's entry and say the name is not common.
    func isCommon(_ resolved: Resolved, caller: Caller) -> Bool {
        let path: [String]
        switch (resolved, options.isolation) {
        case (_, .shared): return true
        case (.directory(let directory, _?, _), .perUser), (.lowerFile(let directory, _), .perUser): path = directory
        case (_, .perUser): return false
        }
        let mine = space(of: caller)
        for (space, upper) in uppers.withLock({ $0 }) where space != mine {
            guard let probe = try? upper.probe(path) else { return false }
            if probe.hidesLower { return false }
            if let info = probe.info, !(Self.isDirectory(info) && resolved.isDirectory) { return false }
        }
        return true
    }

    /// What `path` (an image file's) means changed for one caller: the kernel must not keep leading them to the
    /// image file's inode by a cached name.
    func nameChanged(_ path: [String], synchronously: Bool) {
        guard let name = path.last, let parent = inodes.withLock({ $0.sharedDirectory(Array(path.dropLast())) })
        else { return }
        nameChanged(name, in: parent, synchronously: synchronously)
    }

    func nameChanged(_ name: String, in parent: UInt64, synchronously: Bool) {
        kernel.withLock { $0 }?.invalidateEntry(parent: parent, name: name, synchronously: synchronously)
    }

    public func connect(kernel: any KernelCache) { self.kernel.withLock { $0 = kernel } }

    /// What an image file's inode means to this caller: the image file, or their own copy once they changed it
    /// (reached through a name the kernel cached before), or the upper file they renamed it to.
    func view(ofImageFile node: ImageTree.Node, path: [String], caller: Caller) throws(FSError) -> Resolved? {
        if let alias = inodes.withLock({ $0.alias(of: node.ino, in: space(of: caller)) }) {
            guard case .upperFile(let path, let space)? = try? subject(of: alias) else { return nil }
            return try upper(space: space).status(path).map { .upperFile(path: path, info: $0) }
        }
        // Almost always the caller's upper has nothing there: the image file it is, without walking the tree.
        let probe = try upper(for: caller).probe(path)
        if !probe.hidesLower && probe.info == nil { return .lowerFile(path: path, node: node) }
        return try resolve(path, caller: caller)
    }
}
