import Foundation
import Glibc

/// `renameat2` is not in Swift's Glibc overlay; glibc has exported it since 2.28.
private let renameat2: @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32 = {
    unsafeBitCast(
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2")!,
        to: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32).self)
}()

private let renameNoReplace: UInt32 = 1
private let renameExchange: UInt32 = 2

/// Changes. Writes go to a shadow copy in the upper's work directory, published over the file by one
/// `rename` when the writer closes it: a crash mid-write leaves the old content (or none), never a torn file.
extension OverlayFileSystem {
    public func open(ino: UInt64, flags: Int32, caller: Caller) throws(FSError) -> OpenedFile {
        if ino < 16 {
            let opened = try lower.open(ino: ino, flags: flags, caller: caller)
            return OpenedFile(
                handle: insert(.lower(opened.handle)), keepCache: opened.keepCache, directIO: opened.directIO)
        }
        let writing = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
        let resolved = try resolve(try path(of: ino, caller: caller), caller: caller)
        switch resolved {
        case nil: throw .notFound
        case .directory?: throw .isDirectory
        case .lowerFile(let path, let node)? where writing:
            let upper = try upper(for: caller)
            let content = flags & O_TRUNC != 0 ? Data() : try lowerContent(node, caller: caller)
            return try openShadow(
                path: path, upper: upper, content: content, permissions: node.permissions, ino: ino, flags: flags)
        case .lowerFile(_, let node)?:
            let opened = try lower.open(ino: node.ino, flags: flags, caller: caller)
            return OpenedFile(
                handle: insert(.lower(opened.handle)), keepCache: opened.keepCache, directIO: opened.directIO)
        case .upperFile(let path, let info)? where writing:
            let upper = try upper(for: caller)
            var content = Data()
            if flags & O_TRUNC == 0 {
                let fd = try upper.openFile(path, flags: O_RDONLY)
                content = FileHandle(fileDescriptor: fd, closeOnDealloc: true).readDataToEndOfFile()
            }
            return try openShadow(
                path: path, upper: upper, content: content, permissions: info.st_mode & 0o7777, ino: ino, flags: flags)
        case .upperFile(let path, _)?:
            if Relocation.applies(to: path.last ?? ""), let bytes = try relocated(path, caller: caller) {
                return OpenedFile(handle: insert(.bytes(bytes)), keepCache: false, directIO: true)
            }
            let fd = try upper(for: caller).openFile(path, flags: O_RDONLY)
            return OpenedFile(handle: insert(.descriptor(fd)), keepCache: false, directIO: false)
        }
    }

    func insert(_ handle: Handle) -> UInt64 {
        handles.withLock { state in
            defer { state.next += 1 }
            state.open[state.next] = handle
            if case .shadow(let shadow) = handle { state.pending[shadow.ino] = shadow.fd }
            return state.next
        }
    }

    private func openShadow(
        path: [String], upper: UpperLayer, content: Data, permissions: UInt32, ino: UInt64, flags: Int32
    ) throws(FSError) -> OpenedFile {
        let (fd, name) = try upper.makeWorkFile()
        let written = content.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard written == content.count else {
            close(fd)
            upper.discard(workFile: name)
            throw .unavailable(reason: "copy-up of \(path.joined(separator: "/")): \(UpperLayer.lastError())")
        }
        let shadow = Shadow(
            fd: fd, workName: name, path: path, upper: upper, permissions: permissions, ino: ino,
            append: flags & O_APPEND != 0)
        return OpenedFile(handle: insert(.shadow(shadow)), keepCache: false, directIO: false)
    }

    /// The bytes of an image file as this mount serves them (group files already relocated).
    func lowerContent(_ node: ImageTree.Node, caller: Caller) throws(FSError) -> Data {
        let opened = try lower.open(ino: node.ino, flags: O_RDONLY, caller: caller)
        defer { lower.release(handle: opened.handle) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(Int(node.size), 1), alignment: 16)
        defer { buffer.deallocate() }
        let count = try lower.read(handle: opened.handle, offset: 0, into: buffer)
        return Data(buffer.prefix(count))
    }

    public func read(handle: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(FSError) -> Int {
        switch handles.withLock({ $0.open[handle] }) {
        case nil: throw .badHandle
        case .lower(let inner)?: return try lower.read(handle: inner, offset: offset, into: buffer)
        case .bytes(let data)?: return Reads.copy(data, offset: offset, into: buffer)
        case .descriptor(let fd)?: return try Reads.fill(buffer, from: fd, offset: offset)
        case .shadow(let shadow)?: return try Reads.fill(buffer, from: shadow.fd, offset: offset)
        }
    }

    public func contentBytes(handle: UInt64) -> UnsafeRawBufferPointer? {
        guard case .lower(let inner)? = handles.withLock({ $0.open[handle] }) else { return nil }
        return lower.contentBytes(handle: inner)
    }

    public func write(handle: UInt64, offset: Int64, bytes: UnsafeRawBufferPointer) throws(FSError) -> Int {
        guard case .shadow(let shadow)? = handles.withLock({ $0.open[handle] }) else { throw .badHandle }
        var position = off_t(offset)
        if shadow.append {
            var info = stat()
            fstat(shadow.fd, &info)
            position = info.st_size
        }
        var done = 0
        while done < bytes.count {
            let n = pwrite(shadow.fd, bytes.baseAddress! + done, bytes.count - done, position + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw UpperLayer.error(errno) }
            done += n
        }
        return done
    }

    public func synchronize(handle: UInt64) throws(FSError) {
        switch handles.withLock({ $0.open[handle] }) {
        case .shadow(let shadow)?: if fsync(shadow.fd) != 0 { throw UpperLayer.error(errno) }
        case .descriptor(let fd)?: if fsync(fd) != 0 { throw UpperLayer.error(errno) }
        default: break
        }
    }

    /// Publishes a shadow at the first close: `close(2)` waits for flush but not for release, and programs
    /// (Triton's `os.replace`) rename the file right after closing it.
    public func flush(handle: UInt64) throws(FSError) {
        guard case .shadow(let shadow)? = handles.withLock({ $0.open[handle] }), shadow.workName != nil else { return }
        try publish(shadow)
        handles.withLock { state in
            if case .shadow(var current)? = state.open[handle] {
                current.workName = nil
                state.open[handle] = .shadow(current)
            }
        }
    }

    private func publish(_ shadow: Shadow) throws(FSError) {
        guard let workName = shadow.workName else { return }
        var info = stat()
        let permissions = fstat(shadow.fd, &info) == 0 ? info.st_mode & 0o7777 : shadow.permissions
        do {
            try shadow.upper.publish(workFile: workName, to: shadow.path, permissions: permissions)
        } catch {
            shadow.upper.discard(workFile: workName)
            throw error
        }
    }

    public func release(handle: UInt64) {
        let removed = handles.withLock { state -> Handle? in
            let handle = state.open.removeValue(forKey: handle)
            if case .shadow(let shadow)? = handle, state.pending[shadow.ino] == shadow.fd {
                state.pending[shadow.ino] = nil
            }
            return handle
        }
        switch removed {
        case .lower(let inner)?: lower.release(handle: inner)
        case .descriptor(let fd)?: close(fd)
        case .shadow(let shadow)?:
            try? publish(shadow)
            close(shadow.fd)
        case .bytes?, nil: break
        }
    }

    /// Open shadows follow their file when it is renamed before being closed.
    private func moveShadows(in upper: UpperLayer, from source: [String], to target: [String]) {
        handles.withLock { state in
            for (key, handle) in state.open {
                guard case .shadow(var shadow) = handle, shadow.upper === upper,
                    shadow.path.starts(with: source)
                else { continue }
                shadow.path = target + shadow.path.dropFirst(source.count)
                state.open[key] = .shadow(shadow)
            }
        }
    }

    /// Open writers of a file that is deleted or replaced keep their descriptor, but their copy must never be
    /// published over the name afterwards (POSIX: an unlinked open file lives on, nameless, until closed).
    private func dropShadows(in upper: UpperLayer, at path: [String]) {
        handles.withLock { state in
            for (key, handle) in state.open {
                guard case .shadow(var shadow) = handle, shadow.upper === upper, shadow.path == path,
                    let workName = shadow.workName
                else { continue }
                upper.discard(workFile: workName)
                shadow.workName = nil
                state.open[key] = .shadow(shadow)
            }
        }
    }

    // MARK: Names

    private func checkName(_ name: String) throws(FSError) {
        if UpperLayer.isReserved(name) || name.isEmpty || name.utf8.count > 255 { throw .invalidArgument }
    }

    /// The parent's path and, for creation, the upper directory that must hold the new name.
    private func prepare(parent: UInt64, name: String, caller: Caller) throws(FSError) -> (
        path: [String], upper: UpperLayer
    ) {
        try checkName(name)
        let parentPath = try path(of: parent, caller: caller)
        guard case .directory? = try resolve(parentPath, caller: caller) else { throw .notDirectory }
        let path = parentPath + [name]
        if try resolve(path, caller: caller) != nil { throw .exists }
        let upper = try upper(for: caller)
        guard let fd = try upper.openDirectory(parentPath, create: true) else { throw .notFound }
        close(fd)
        return (path, upper)
    }

    /// After creating `path` in the upper: drop a whiteout of it, and make a new directory opaque when the
    /// image had one there (its old contents stay deleted).
    private func settle(_ path: [String], directory: Bool, upper: UpperLayer) throws(FSError) {
        guard try upper.isWhitedOut(path) else { return }
        try upper.removeWhiteout(path)
        if directory { try upper.makeOpaque(path) }
    }

    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32, caller: Caller) throws(FSError)
        -> (Attributes, OpenedFile)
    {
        let (path, upper) = try prepare(parent: parent, name: name, caller: caller)
        // The empty file appears at once, so O_EXCL creation works as a lock between processes.
        _ = try upper.inParent(of: path) { fd, last throws(FSError) in
            let file = openat(fd, last, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, mode & 0o7777)
            guard file >= 0 else { throw UpperLayer.error(errno) }
            fchown(file, caller.uid, caller.gid)
            close(file)
        }
        try settle(path, directory: false, upper: upper)
        guard let resolved = try resolve(path, caller: caller) else { throw .notFound }
        let attributes = try attributes(of: resolved, caller: caller)
        let opened = try openShadow(
            path: path, upper: upper, content: Data(), permissions: mode & 0o7777, ino: attributes.ino, flags: flags)
        return (attributes, opened)
    }

    public func makeDirectory(parent: UInt64, name: String, mode: UInt32, caller: Caller) throws(FSError) -> Attributes
    {
        let (path, upper) = try prepare(parent: parent, name: name, caller: caller)
        _ = try upper.inParent(of: path) { fd, last throws(FSError) in
            guard mkdirat(fd, last, mode & 0o7777) == 0 else { throw UpperLayer.error(errno) }
            fchownat(fd, last, caller.uid, caller.gid, AT_SYMLINK_NOFOLLOW)
        }
        try settle(path, directory: true, upper: upper)
        guard let resolved = try resolve(path, caller: caller) else { throw .notFound }
        return try attributes(of: resolved, caller: caller)
    }

    public func makeSymlink(parent: UInt64, name: String, target: String, caller: Caller) throws(FSError) -> Attributes
    {
        let (path, upper) = try prepare(parent: parent, name: name, caller: caller)
        _ = try upper.inParent(of: path) { fd, last throws(FSError) in
            guard symlinkat(target, fd, last) == 0 else { throw UpperLayer.error(errno) }
            fchownat(fd, last, caller.uid, caller.gid, AT_SYMLINK_NOFOLLOW)
        }
        try settle(path, directory: false, upper: upper)
        guard let resolved = try resolve(path, caller: caller) else { throw .notFound }
        return try attributes(of: resolved, caller: caller)
    }

    public func makeLink(ino: UInt64, newParent: UInt64, newName: String, caller: Caller) throws(FSError) -> Attributes
    {
        let source = try path(of: ino, caller: caller)
        if case .lowerFile(_, let node)? = try resolve(source, caller: caller) {
            try copyUp(source, node: node, caller: caller)
        }
        guard case .upperFile? = try resolve(source, caller: caller) else { throw .permissionDenied }
        let (path, upper) = try prepare(parent: newParent, name: newName, caller: caller)
        guard let from = try upper.openDirectory(Array(source.dropLast())) else { throw .notFound }
        defer { close(from) }
        _ = try upper.inParent(of: path) { fd, last throws(FSError) in
            guard linkat(from, source.last!, fd, last, 0) == 0 else { throw UpperLayer.error(errno) }
        }
        try settle(path, directory: false, upper: upper)
        let space = space(of: caller)
        let sourceIno = inodes.withLock { $0.ino(for: .upper(space: space, path: source.joined(separator: "/"))) }
        inodes.withLock { $0.bind(.upper(space: space, path: path.joined(separator: "/")), to: sourceIno) }
        guard let resolved = try resolve(path, caller: caller) else { throw .notFound }
        return try attributes(of: resolved, caller: caller)
    }

    /// Puts a copy of an image file into the caller's upper at the same path, atomically.
    func copyUp(_ path: [String], node: ImageTree.Node, caller: Caller, size: Int64? = nil) throws(FSError) {
        let upper = try upper(for: caller)
        var content = try lowerContent(node, caller: caller)
        if let size {
            content =
                size <= content.count ? content.prefix(Int(size)) : content + Data(count: Int(size) - content.count)
        }
        let (fd, name) = try upper.makeWorkFile()
        let written = content.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        let synced = fsync(fd)
        close(fd)
        guard written == content.count, synced == 0 else {
            upper.discard(workFile: name)
            throw .unavailable(reason: "copy-up of \(path.joined(separator: "/")) failed")
        }
        do {
            try upper.publish(workFile: name, to: path, permissions: node.permissions)
        } catch {
            upper.discard(workFile: name)
            throw error
        }
    }

    public func removeFile(parent: UInt64, name: String, caller: Caller) throws(FSError) {
        let path = try path(of: parent, caller: caller) + [name]
        let upper = try upper(for: caller)
        switch try resolve(path, caller: caller) {
        case nil: throw .notFound
        case .directory?: throw .isDirectory
        case .upperFile?:
            dropShadows(in: upper, at: path)
            _ = try upper.inParent(of: path) { fd, last throws(FSError) in
                guard unlinkat(fd, last, 0) == 0 else { throw UpperLayer.error(errno) }
            }
            inodes.withLock { $0.remove(.upper(space: space(of: caller), path: path.joined(separator: "/"))) }
            if case .lowerFile? = try resolve(path, caller: caller) { try upper.makeWhiteout(path) }
        case .lowerFile?:
            dropShadows(in: upper, at: path)
            try upper.makeWhiteout(path)
        }
    }

    public func removeDirectory(parent: UInt64, name: String, caller: Caller) throws(FSError) {
        let path = try path(of: parent, caller: caller) + [name]
        guard case .directory(_, let lowerNode, let upperInfo)? = try resolve(path, caller: caller) else {
            throw try resolve(path, caller: caller) == nil ? .notFound : .notDirectory
        }
        let ino = try ino(ofPath: path, caller: caller)
        guard try listDirectory(ino: ino, caller: caller).count == 2 else { throw .notEmpty }
        let upper = try upper(for: caller)
        if upperInfo != nil { try upper.removeDirectory(path) }
        if lowerNode != nil { try upper.makeWhiteout(path) }
    }

    public func rename(
        parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32, caller: Caller
    ) throws(FSError) {
        if flags & renameExchange != 0 { throw .invalidArgument }
        try checkName(newName)
        let source = try path(of: parent, caller: caller) + [name]
        let target = try path(of: newParent, caller: caller) + [newName]
        if source == target { return }
        guard let from = try resolve(source, caller: caller) else { throw .notFound }
        let existing = try resolve(target, caller: caller)
        if existing != nil && flags & renameNoReplace != 0 { throw .exists }
        let upper = try upper(for: caller)
        switch (from, existing) {
        case (.directory, .lowerFile?), (.directory, .upperFile?): throw .notDirectory
        case (.lowerFile, .directory?), (.upperFile, .directory?): throw .isDirectory
        case (.directory(_, let lowerNode, _), let target?):
            if lowerNode != nil { throw .crossDevice }
            guard try listDirectory(ino: ino(of: target, caller: caller), caller: caller).count == 2 else {
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
        defer {
            close(sourceDirectory)
            close(targetDirectory)
        }
        if case .directory(_, _, let upperInfo)? = existing, upperInfo != nil {
            try upper.removeDirectory(target)  // empty in the merged view: only markers can be left in it
        }
        if case .directory? = existing {} else if existing != nil { dropShadows(in: upper, at: target) }
        guard renameat2(sourceDirectory, source.last!, targetDirectory, target.last!, flags & renameNoReplace) == 0
        else {
            throw UpperLayer.error(errno)
        }
        let isDirectory: Bool
        if case .directory = from { isDirectory = true } else { isDirectory = false }
        if case .directory(_, let lowerNode, _)? = existing, lowerNode != nil {
            try upper.makeOpaque(target)
        }
        try settle(target, directory: isDirectory, upper: upper)
        inodes.withLock {
            $0.move(space: space(of: caller), from: source.joined(separator: "/"), to: target.joined(separator: "/"))
        }
        moveShadows(in: upper, from: source, to: target)
        if try lower.load().node(atPath: source.joined(separator: "/")) != nil,
            try resolve(source, caller: caller) != nil
        {
            try upper.makeWhiteout(source)
        }
    }

    public func setAttributes(ino: UInt64, changes: AttributeChanges, handle: UInt64?, caller: Caller) throws(FSError)
        -> Attributes
    {
        if let handle, case .shadow(let shadow)? = handles.withLock({ $0.open[handle] }) {
            try Self.apply(changes, fd: shadow.fd)
            return try attributes(ino: ino, caller: caller)
        }
        let path = try path(of: ino, caller: caller)
        let upper = try upper(for: caller)
        switch try resolve(path, caller: caller) {
        case nil: throw .notFound
        case .lowerFile(_, let node)?:
            try copyUp(path, node: node, caller: caller, size: changes.size)
            var rest = changes
            rest.size = nil
            try apply(rest, path: path, upper: upper)
        case .directory(_, _, let upperInfo)?:
            if upperInfo == nil, let fd = try upper.openDirectory(path, create: true) { close(fd) }
            try apply(changes, path: path, upper: upper)
        case .upperFile?:
            try apply(changes, path: path, upper: upper)
        }
        guard let resolved = try resolve(path, caller: caller) else { throw .notFound }
        return try attributes(of: resolved, caller: caller)
    }

    private func apply(_ changes: AttributeChanges, path: [String], upper: UpperLayer) throws(FSError) {
        if path.isEmpty {
            let fd = Glibc.open(upper.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            defer { close(fd) }
            try Self.apply(changes, fd: fd)
            return
        }
        let fd = try upper.openFile(path, flags: changes.size != nil ? O_WRONLY : O_RDONLY)
        defer { close(fd) }
        try Self.apply(changes, fd: fd)
    }

    static func apply(_ changes: AttributeChanges, fd: Int32) throws(FSError) {
        if let size = changes.size, ftruncate(fd, off_t(size)) != 0 { throw UpperLayer.error(errno) }
        if let permissions = changes.permissions, fchmod(fd, permissions) != 0 { throw UpperLayer.error(errno) }
        if changes.accessed != nil || changes.modified != nil {
            // UTIME_OMIT keeps a time the caller did not set.
            let omit = timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2)
            var times = [
                changes.accessed.map { timespec(tv_sec: Int($0), tv_nsec: 0) } ?? omit,
                changes.modified.map { timespec(tv_sec: Int($0), tv_nsec: 0) } ?? omit,
            ]
            if futimens(fd, &times) != 0 { throw UpperLayer.error(errno) }
        }
    }
}
