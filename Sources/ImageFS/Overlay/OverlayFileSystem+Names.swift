import Foundation
import Glibc

private let renameNoReplace: UInt32 = 1
private let renameExchange: UInt32 = 2

/// Operations on names: they change the caller's upper only, and tell the inode table what a name now means.
extension OverlayFileSystem {
    private func checkName(_ name: String) throws(FSError) {
        if UpperLayer.isReserved(name) || name.isEmpty || name.utf8.count > 255 { throw .invalidArgument }
    }

    /// The path a new entry gets and the caller's upper, with the directory that must hold it created there.
    private func prepare(parent: UInt64, name: String, caller: Caller) throws(FSError) -> (
        path: [String], upper: UpperLayer
    ) {
        try checkName(name)
        let parentPath = try directoryPath(parent, caller: caller)
        switch try resolve(parentPath, caller: caller) {
        case .directory?: break
        case nil: throw .notFound
        default: throw .notDirectory
        }
        let path = parentPath + [name]
        if try resolve(path, caller: caller) != nil { throw .exists }
        let upper = try upper(for: caller)
        guard try upper.openDirectory(parentPath, create: true) != nil else { throw .notFound }
        return (path, upper)
    }

    /// After creating `path` in the upper: drop a whiteout of it, and make a new directory opaque when the
    /// image had one there (its old contents stay deleted).
    private func settle(_ path: [String], directory: Bool, upper: UpperLayer) throws(FSError) {
        guard try upper.isWhitedOut(path) else { return }
        try upper.removeWhiteout(path)
        if directory { try upper.makeOpaque(path) }
    }

    /// The reply for a new entry: what it resolves to now, with one lookup for the kernel.
    private func created(_ path: [String], parent: UInt64, caller: Caller) throws(FSError) -> Attributes {
        guard let resolved = try resolve(path, caller: caller) else { throw .notFound }
        return try reference(resolved, parent: parent, name: path.last!, caller: caller)
    }

    private func name(_ parent: UInt64, _ name: String, _ caller: Caller) -> OverlayInodes.Name {
        OverlayInodes.Name(parent: parent, name: name, space: space(of: caller))
    }

    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32, caller: Caller) throws(FSError)
        -> (Attributes, OpenedFile)
    {
        let (path, upper) = try prepare(parent: parent, name: name, caller: caller)
        // The empty file appears at once, so O_EXCL creation works as a lock between processes.
        _ = try upper.inParent(of: path) { directory, last throws(FSError) in
            switch directory.openFile(last, flags: O_CREAT | O_EXCL | O_WRONLY, mode: mode & 0o1777) {
            case .failure(let error): throw UpperLayer.error(error.code)
            case .success(let file):
                defer { close(file) }
                try UpperLayer.giveAway(file, to: (caller.uid, caller.gid), permissions: mode)
            }
        }
        try settle(path, directory: false, upper: upper)
        let attributes = try created(path, parent: parent, caller: caller)
        do throws(FSError) {
            let opened = try openShadow(
                path: path, upper: upper, permissions: mode, owner: (caller.uid, caller.gid), flags: flags,
                copying: nil, caller: caller)
            return (attributes, opened)
        } catch {
            forget(ino: attributes.ino, count: 1)
            throw error
        }
    }

    public func makeDirectory(parent: UInt64, name: String, mode: UInt32, caller: Caller) throws(FSError) -> Attributes
    {
        let (path, upper) = try prepare(parent: parent, name: name, caller: caller)
        _ = try upper.inParent(of: path) { directory, last throws(FSError) in
            if let error = directory.makeDirectory(last, mode: mode & 0o1777) { throw UpperLayer.error(error.code) }
            try UpperLayer.giveAway(last, in: directory, to: (caller.uid, caller.gid))
        }
        try settle(path, directory: true, upper: upper)
        return try created(path, parent: parent, caller: caller)
    }

    public func makeSymlink(parent: UInt64, name: String, target: String, caller: Caller) throws(FSError) -> Attributes
    {
        let (path, upper) = try prepare(parent: parent, name: name, caller: caller)
        _ = try upper.inParent(of: path) { directory, last throws(FSError) in
            if let error = directory.makeSymlink(last, target: target) { throw UpperLayer.error(error.code) }
            try UpperLayer.giveAway(last, in: directory, to: (caller.uid, caller.gid))
        }
        try settle(path, directory: false, upper: upper)
        return try created(path, parent: parent, caller: caller)
    }

    public func makeLink(ino: UInt64, newParent: UInt64, newName: String, caller: Caller) throws(FSError) -> Attributes
    {
        let source: [String]
        var sourceIno: UInt64?
        switch try subject(of: ino) {
        case .lowerFile(let path, let node):
            // The link is to the caller's copy, a file of its own: the image file's inode stays what it is.
            switch try view(ofImageFile: node, path: path, caller: caller) {
            case .lowerFile(_, let current)? where current.ino == node.ino:
                try copyUp(path, node: node, caller: caller)
                nameChanged(path, synchronously: false)
                source = path
            case .upperFile(let path, _)?: source = path
            default: throw .notFound
            }
        case .upperFile(let path, let space) where space == self.space(of: caller):
            source = path
            sourceIno = ino
        default: throw .permissionDenied
        }
        guard case .upperFile? = try resolve(source, caller: caller) else { throw .permissionDenied }
        let (path, upper) = try prepare(parent: newParent, name: newName, caller: caller)
        guard let from = try upper.openDirectory(Array(source.dropLast())) else { throw .notFound }
        _ = try upper.inParent(of: path) { directory, last throws(FSError) in
            if let error = from.link(source.last!, to: directory, last) { throw UpperLayer.error(error.code) }
        }
        try settle(path, directory: false, upper: upper)
        if let sourceIno {
            // Both names stand for one upper inode.
            inodes.withLock { $0.bind(name(newParent, newName, caller), to: sourceIno) }
        }
        return try created(path, parent: newParent, caller: caller)
    }

    /// Puts a copy of an image file into the caller's upper at the same path, atomically; `size` truncates or
    /// extends it on the way.
    func copyUp(_ path: [String], node: ImageTree.Node, caller: Caller, size: Int64? = nil) throws(FSError) {
        let upper = try upper(for: caller)
        let (fd, name) = try upper.makeWorkFile(permissions: node.permissions, owner: copyOwner(in: upper))
        do throws(FSError) {
            defer { close(fd) }
            try copyContent(of: node, to: fd, caller: caller)
            if let size, ftruncate(fd, off_t(size)) != 0 { throw UpperLayer.error(errno) }
            if fsync(fd) != 0 { throw UpperLayer.error(errno) }
            try upper.publish(workFile: name, to: path)
        } catch {
            upper.discard(workFile: name)
            throw error
        }
    }

    public func removeFile(parent: UInt64, name: String, caller: Caller) throws(FSError) {
        let path = try directoryPath(parent, caller: caller) + [name]
        let upper = try upper(for: caller)
        switch try resolve(path, caller: caller) {
        case nil: throw .notFound
        case .directory?: throw .isDirectory
        case .upperFile?:
            orphanShadows(in: upper, at: path)
            _ = try upper.inParent(of: path) { directory, last throws(FSError) in
                if let error = directory.remove(last) { throw UpperLayer.error(error.code) }
            }
            inodes.withLock { $0.unbind(self.name(parent, name, caller)) }
            if case .lowerFile? = try resolve(path, caller: caller) { try upper.makeWhiteout(path) }
        case .lowerFile?:
            orphanShadows(in: upper, at: path)
            try upper.makeWhiteout(path)
        }
    }

    private func orphanShadows(in upper: UpperLayer, at path: [String]) {
        for workName in handles.withLock({ $0.orphanShadows(in: upper, at: path) }) {
            upper.discard(workFile: workName)
        }
    }

    /// Whether a directory shows this caller no entry (what `rmdir` and a rename over it need), without
    /// resolving its names: any upper entry counts, and any image entry that is neither deleted nor hidden.
    private func isEmpty(_ path: [String], lower lowerNode: ImageTree.Node?, upper info: stat?, caller: Caller)
        throws(FSError) -> Bool
    {
        let upper = try upper(for: caller)
        var whiteouts = Set<String>()
        if info != nil {
            let listed = try upper.list(path)
            if !listed.names.isEmpty { return false }
            if try upper.isOpaque(path) { return true }
            whiteouts = listed.whiteouts
        }
        return lowerNode?.listing.allSatisfy { whiteouts.contains($0) } ?? true
    }

    public func removeDirectory(parent: UInt64, name: String, caller: Caller) throws(FSError) {
        let path = try directoryPath(parent, caller: caller) + [name]
        let resolved = try resolve(path, caller: caller)
        guard case .directory(_, let lowerNode, let upperInfo)? = resolved else {
            throw resolved == nil ? .notFound : .notDirectory
        }
        guard try isEmpty(path, lower: lowerNode, upper: upperInfo, caller: caller) else { throw .notEmpty }
        let upper = try upper(for: caller)
        if upperInfo != nil { try upper.removeDirectory(path) }
        if lowerNode != nil {
            // Others still see the image's directory: its inode stays theirs.
            try upper.makeWhiteout(path)
        } else {
            inodes.withLock { $0.unbind(self.name(parent, name, caller)) }
        }
    }

    public func rename(
        parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32, caller: Caller
    ) throws(FSError) {
        if flags & renameExchange != 0 { throw .invalidArgument }
        try checkName(newName)
        let source = try directoryPath(parent, caller: caller) + [name]
        let target = try directoryPath(newParent, caller: caller) + [newName]
        if source == target { return }
        guard let from = try resolve(source, caller: caller) else { throw .notFound }
        let existing = try resolve(target, caller: caller)
        if existing != nil && flags & renameNoReplace != 0 { throw .exists }
        let upper = try upper(for: caller)
        switch (from, existing) {
        case (.directory, .lowerFile?), (.directory, .upperFile?): throw .notDirectory
        case (.lowerFile, .directory?), (.upperFile, .directory?): throw .isDirectory
        case (.directory(_, let lowerNode, _), .directory(_, let targetLower, let targetUpper)?):
            if lowerNode != nil { throw .crossDevice }
            guard try isEmpty(target, lower: targetLower, upper: targetUpper, caller: caller) else {
                throw .notEmpty
            }
        case (.directory(_, let lowerNode, _), nil):
            if lowerNode != nil { throw .crossDevice }
        default: break
        }
        if case .lowerFile(_, let node) = from {
            try copyUp(source, node: node, caller: caller)
        }
        guard let sourceDirectory = try upper.openDirectory(Array(source.dropLast())),
            let targetDirectory = try upper.openDirectory(Array(target.dropLast()), create: true)
        else { throw .notFound }
        if case .directory(_, _, let upperInfo)? = existing, upperInfo != nil {
            try upper.removeDirectory(target)  // empty in the merged view: only markers can be left in it
        }
        if case .directory? = existing {} else if existing != nil { orphanShadows(in: upper, at: target) }
        if let error = sourceDirectory.rename(
            source.last!, to: targetDirectory, target.last!, flags: flags & renameNoReplace)
        {
            throw UpperLayer.error(error.code)
        }
        var isDirectory = false
        if case .directory = from { isDirectory = true }
        if case .directory(_, let lowerNode, _)? = existing, lowerNode != nil {
            try upper.makeOpaque(target)
        }
        try settle(target, directory: isDirectory, upper: upper)
        let renamed = (from: self.name(parent, name, caller), to: self.name(newParent, newName, caller))
        inodes.withLock { table in
            guard case .lowerFile(_, let node) = from else { return table.rename(renamed.from, to: renamed.to) }
            // The kernel moves its name of the image file's inode to the target: for this caller that inode now
            // stands for their copy there, until the kernel lets go of the name.
            table.unbind(renamed.to)
            table.alias(node.ino, in: space(of: caller), to: renamed.to)
        }
        if case .lowerFile = from { nameChanged(newName, in: newParent, synchronously: false) }
        handles.withLock { $0.moveShadows(in: upper, from: source, to: target) }
        if try lower.load().node(atPath: source.joined(separator: "/")) != nil,
            try resolve(source, caller: caller) != nil
        {
            try upper.makeWhiteout(source)
        }
    }
}
