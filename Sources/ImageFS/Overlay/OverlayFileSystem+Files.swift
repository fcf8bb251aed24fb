import Foundation
import Glibc
import TimeBudget

/// Open files. A writer gets a shadow copy in the upper's work directory, published over the file by one `rename`
/// at its first close: a crash mid-write leaves the old content (or none), never a torn file.
///
/// What goes through the kernel's page cache is only what every caller of an inode would read: image files. A
/// writer's handle and upper files' readers use direct I/O, so a writer's bytes never reach the pages of the image
/// inode it copied (another user would read them there), and each reader of an upper file reads the version it
/// opened in full, whatever a writer publishes meanwhile or the kernel caches as the inode's size (a reader
/// through the page cache stops at that size).
extension OverlayFileSystem {
    public func open(ino: UInt64, flags: Int32, caller: Caller) throws(FSError) -> OpenedFile {
        if ino < ImageFileSystem.firstTreeIno && ino != ImageFileSystem.rootIno {
            return try openLower(ino, flags: flags, caller: caller)
        }
        let writing = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
        switch try subject(of: ino) {
        case .directory: throw .isDirectory
        case .lowerFile(let path, let node):
            // The caller may have its own copy by now, reached by a name the kernel cached before: serve that.
            switch try view(ofImageFile: node, path: path, caller: caller) {
            case .lowerFile(_, let current)? where current.ino == node.ino:
                guard writing else { return try openLower(node.ino, flags: flags, caller: caller) }
                let upper = try upper(for: caller)
                return try openShadow(
                    path: path, upper: upper, permissions: node.permissions, owner: copyOwner(in: upper),
                    flags: flags, copying: flags & O_TRUNC != 0 ? nil : .lower(node), ofImageFile: true, caller: caller)
            case .upperFile(let path, let info)?:
                return try openUpper(path, info: info, upper: upper(for: caller), flags: flags, caller: caller)
            default: throw .notFound
            }
        case .upperFile(let path, let space):
            let upper = try upper(space: space)
            guard let info = try upper.status(path), !Self.isDirectory(info) else { throw .notFound }
            return try openUpper(path, info: info, upper: upper, flags: flags, caller: caller)
        }
    }

    private func openLower(_ ino: UInt64, flags: Int32, caller: Caller) throws(FSError) -> OpenedFile {
        let opened = try lower.open(ino: ino, flags: flags, caller: caller)
        return OpenedFile(
            handle: handles.withLock { $0.insert(.lower(opened.handle)) }, keepCache: opened.keepCache,
            directIO: opened.directIO)
    }

    private func openUpper(_ path: [String], info: stat, upper: UpperLayer, flags: Int32, caller: Caller)
        throws(FSError) -> OpenedFile
    {
        if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 {
            return try openShadow(
                path: path, upper: upper, permissions: info.st_mode, owner: (info.st_uid, info.st_gid), flags: flags,
                copying: flags & O_TRUNC != 0 ? nil : .upper(path), caller: caller)
        }
        if Relocation.applies(to: path.last ?? ""), let bytes = try relocated(path, in: upper) {
            return OpenedFile(handle: handles.withLock { $0.insert(.bytes(bytes)) }, keepCache: false, directIO: true)
        }
        let fd = try upper.openFile(path, flags: O_RDONLY)
        return OpenedFile(handle: handles.withLock { $0.insert(.descriptor(fd)) }, keepCache: false, directIO: true)
    }

    /// Where a shadow's first bytes come from.
    enum ShadowSource {
        case lower(ImageTree.Node)
        case upper([String])
    }

    /// Who owns a copy of an image file: the writer in their own upper, the mount's owner (as the image file) in a
    /// shared one.
    func copyOwner(in upper: UpperLayer) -> (uid: UInt32, gid: UInt32) {
        options.isolation == .shared ? owner : upper.owner
    }

    /// - Parameter ofImageFile: the shadow replaces an image file for this caller (see `Shadow.copiesImageFile`).
    func openShadow(
        path: [String], upper: UpperLayer, permissions: UInt32, owner: (uid: UInt32, gid: UInt32), flags: Int32,
        copying source: ShadowSource?, ofImageFile: Bool = false, caller: Caller
    ) throws(FSError) -> OpenedFile {
        let (fd, name) = try upper.makeWorkFile(permissions: permissions, owner: owner)
        do throws(FSError) {
            switch source {
            case .lower(let node)?: try copyContent(of: node, to: fd, caller: caller)
            case .upper(let path)?:
                let from = try upper.openFile(path, flags: O_RDONLY)
                defer { close(from) }
                try SparseCopy.copy(from: from, to: fd)
            case nil: break
            }
        } catch {
            close(fd)
            upper.discard(workFile: name)
            throw error
        }
        var shadow = OverlayHandles.Shadow(
            fd: fd, workName: name, path: path, upper: upper, append: flags & O_APPEND != 0)
        shadow.copiesImageFile = ofImageFile
        return OpenedFile(handle: handles.withLock { $0.insert(.shadow(shadow)) }, keepCache: false, directIO: true)
    }

    /// Copies an image file's bytes as this mount serves them (group files already relocated) into `fd`.
    func copyContent(of node: ImageTree.Node, to fd: Int32, caller: Caller) throws(FSError) {
        let opened = try lower.open(ino: node.ino, flags: O_RDONLY, caller: caller)
        defer { lower.release(handle: opened.handle) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while true {
            let count = try lower.read(handle: opened.handle, offset: offset, into: buffer)
            if count == 0 { return }
            if Deadline.current?.hasPassed == true {
                throw .unavailable(reason: "copy of an image file stopped at the operation's deadline")
            }
            try Self.write(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), to: fd, at: offset)
            offset += Int64(count)
        }
    }

    static func write(_ bytes: UnsafeRawBufferPointer, to fd: Int32, at offset: Int64) throws(FSError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw UpperLayer.error(errno) }
            done += n
        }
    }

    public func read(handle: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(FSError) -> Int {
        switch handles.withLock({ $0[handle] }) {
        case nil: throw .badHandle
        case .lower(let inner)?: return try lower.read(handle: inner, offset: offset, into: buffer)
        case .bytes(let data)?: return Reads.copy(data, offset: offset, into: buffer)
        case .descriptor(let fd)?: return try Reads.fill(buffer, from: fd, offset: offset)
        case .shadow(let shadow)?: return try Reads.fill(buffer, from: shadow.fd, offset: offset)
        }
    }

    public func contentBytes(handle: UInt64) -> UnsafeRawBufferPointer? {
        guard case .lower(let inner)? = handles.withLock({ $0[handle] }) else { return nil }
        return lower.contentBytes(handle: inner)
    }

    public func write(handle: UInt64, offset: Int64, bytes: UnsafeRawBufferPointer) throws(FSError) -> Int {
        guard case .shadow(let shadow)? = handles.withLock({ $0[handle] }) else { throw .badHandle }
        var position = offset
        if shadow.append {
            var info = stat()
            fstat(shadow.fd, &info)
            position = Int64(info.st_size)
        }
        try Self.write(bytes, to: shadow.fd, at: position)
        return bytes.count
    }

    public func synchronize(handle: UInt64) throws(FSError) {
        switch handles.withLock({ $0[handle] }) {
        case .shadow(let shadow)?: if fsync(shadow.fd) != 0 { throw UpperLayer.error(errno) }
        case .descriptor(let fd)?: if fsync(fd) != 0 { throw UpperLayer.error(errno) }
        default: break
        }
    }

    /// Publishes a shadow at the first close: `close(2)` waits for flush but not for release, and programs
    /// (Triton's `os.replace`) rename the file right after closing it.
    public func flush(handle: UInt64) throws(FSError) {
        guard case .shadow(let shadow)? = handles.withLock({ $0[handle] }), let workName = shadow.workName else {
            return
        }
        defer { handles.withLock { $0.published(handle) } }
        do throws(FSError) {
            try shadow.upper.publish(workFile: workName, to: shadow.path)
        } catch {
            shadow.upper.discard(workFile: workName)
            throw error
        }
        // A flush holds no directory lock: the caller's next lookup of the name already finds their copy.
        if shadow.copiesImageFile { nameChanged(shadow.path, synchronously: true) }
    }

    public func release(handle: UInt64) {
        switch handles.withLock({ $0.remove(handle) }) {
        case .lower(let inner)?: lower.release(handle: inner)
        case .descriptor(let fd)?: close(fd)
        case .shadow(let shadow)?:
            if let workName = shadow.workName {
                do {
                    try shadow.upper.publish(workFile: workName, to: shadow.path)
                    if shadow.copiesImageFile { nameChanged(shadow.path, synchronously: false) }
                } catch {
                    shadow.upper.discard(workFile: workName)
                }
            }
            close(shadow.fd)
        case .bytes?, nil: break
        }
    }

    // MARK: Attributes

    public func setAttributes(ino: UInt64, changes: AttributeChanges, handle: UInt64?, caller: Caller) throws(FSError)
        -> Attributes
    {
        if let handle, case .shadow(let shadow)? = handles.withLock({ $0[handle] }) {
            try Self.apply(changes, fd: shadow.fd)
            return try attributes(ino: ino, handle: handle, caller: caller)
        }
        switch try subject(of: ino) {
        case .directory(let path, _):
            let upper = try upper(for: caller)
            if let directory = try upper.openDirectory(path, create: true) {
                try Self.apply(changes, fd: directory.fd)
            }
        case .lowerFile(let path, let node):
            switch try view(ofImageFile: node, path: path, caller: caller) {
            case .lowerFile(_, let current)? where current.ino == node.ino:
                try copyUp(path, node: node, caller: caller, size: changes.size)
                var rest = changes
                rest.size = nil
                try apply(rest, path: path, upper: upper(for: caller))
                // The kernel holds this file's lock, which an unlink in its directory may be waiting for: queued.
                nameChanged(path, synchronously: false)
            case .upperFile(let path, _)?: try apply(changes, path: path, upper: upper(for: caller))
            default: throw .notFound
            }
        case .upperFile(let path, let space):
            try apply(changes, path: path, upper: upper(space: space))
        }
        return try attributes(ino: ino, caller: caller)
    }

    private func apply(_ changes: AttributeChanges, path: [String], upper: UpperLayer) throws(FSError) {
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
