import CFuse
import Glibc
import ImageFS

extension OperationContext {
    /// The low-level operation table. Each entry recovers the context from the request, calls the filesystem
    /// and replies exactly once.
    static let operations: fuse_lowlevel_ops = {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, _ in
            Unmanaged<OperationContext>.fromOpaque(userdata!).takeUnretainedValue().connectedPending.store(
                true, ordering: .releasing)
        }
        ops.lookup = { req, parent, name in
            let context = from(req)
            context.serve(req, "lookup") { () throws(FSError) in
                context.replyEntry(
                    req,
                    try context.fileSystem.lookup(parent: parent, name: String(cString: name!), caller: caller(req)))
            }
        }
        ops.forget = { req, ino, count in
            from(req).fileSystem.forget(ino: ino, count: count)
            fuse_reply_none(req)
        }
        ops.forget_multi = { req, count, forgets in
            let fileSystem = from(req).fileSystem
            for item in UnsafeBufferPointer(start: forgets, count: count) {
                fileSystem.forget(ino: item.ino, count: item.nlookup)
            }
            fuse_reply_none(req)
        }
        ops.getattr = { req, ino, info in
            let context = from(req)
            context.serve(req, "getattr") { () throws(FSError) in
                // The kernel names the handle when it asks about an open file (fstat, a read checking the size).
                context.replyAttributes(
                    req, try context.fileSystem.attributes(ino: ino, handle: info?.pointee.fh, caller: caller(req)))
            }
        }
        ops.setattr = { req, ino, attr, toSet, info in
            let context = from(req)
            context.serve(req, "setattr") { () throws(FSError) in
                let changes = AttributeChanges(attr: attr!.pointee, toSet: toSet)
                let handle = info.map { $0.pointee.fh }
                context.replyAttributes(
                    req,
                    try context.fileSystem.setAttributes(
                        ino: ino, changes: changes, handle: handle, caller: caller(req))
                )
            }
        }
        ops.readlink = { req, ino in
            let context = from(req)
            context.serve(req, "readlink") { () throws(FSError) in
                fuse_reply_readlink(req, try context.fileSystem.readLink(ino: ino, caller: caller(req)))
            }
        }
        ops.mkdir = { req, parent, name, mode in
            let context = from(req)
            context.serve(req, "mkdir") { () throws(FSError) in
                context.replyEntry(
                    req,
                    try context.fileSystem.makeDirectory(
                        parent: parent, name: String(cString: name!), mode: mode & 0o7777, caller: caller(req)))
            }
        }
        ops.unlink = { req, parent, name in
            let context = from(req)
            context.serve(req, "unlink") { () throws(FSError) in
                try context.fileSystem.removeFile(parent: parent, name: String(cString: name!), caller: caller(req))
                fuse_reply_err(req, 0)
            }
        }
        ops.rmdir = { req, parent, name in
            let context = from(req)
            context.serve(req, "rmdir") { () throws(FSError) in
                try context.fileSystem.removeDirectory(
                    parent: parent, name: String(cString: name!), caller: caller(req))
                fuse_reply_err(req, 0)
            }
        }
        ops.symlink = { req, target, parent, name in
            let context = from(req)
            context.serve(req, "symlink") { () throws(FSError) in
                context.replyEntry(
                    req,
                    try context.fileSystem.makeSymlink(
                        parent: parent, name: String(cString: name!), target: String(cString: target!),
                        caller: caller(req)))
            }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            let context = from(req)
            context.serve(req, "rename") { () throws(FSError) in
                try context.fileSystem.rename(
                    parent: parent, name: String(cString: name!), newParent: newParent,
                    newName: String(cString: newName!), flags: flags, caller: caller(req))
                fuse_reply_err(req, 0)
            }
        }
        ops.link = { req, ino, newParent, newName in
            let context = from(req)
            context.serve(req, "link") { () throws(FSError) in
                context.replyEntry(
                    req,
                    try context.fileSystem.makeLink(
                        ino: ino, newParent: newParent, newName: String(cString: newName!), caller: caller(req)))
            }
        }
        ops.open = { req, ino, info in
            let context = from(req)
            context.serve(req, "open") { () throws(FSError) in
                let opened = try context.fileSystem.open(ino: ino, flags: info!.pointee.flags, caller: caller(req))
                context.replyOpen(req, info, opened)
            }
        }
        ops.create = { req, parent, name, mode, info in
            let context = from(req)
            context.serve(req, "create") { () throws(FSError) in
                let (attributes, opened) = try context.fileSystem.create(
                    parent: parent, name: String(cString: name!), mode: mode & 0o7777, flags: info!.pointee.flags,
                    caller: caller(req))
                var entry = context.entry(attributes)
                info!.pointee.fh = opened.handle
                mcvfs_file_info_set_cache(info, opened.keepCache ? 1 : 0, opened.directIO ? 1 : 0)
                if fuse_reply_create(req, &entry, info) != 0 {
                    // The creator was interrupted: nobody will release the handle or forget the inode.
                    context.fileSystem.release(handle: opened.handle)
                    context.fileSystem.forget(ino: attributes.ino, count: 1)
                }
            }
        }
        ops.read = { req, _, size, offset, info in
            let context = from(req)
            if let content = context.fileSystem.contentBytes(handle: info!.pointee.fh) {
                let part = Reads.slice(content, offset: Int64(offset), count: size)
                fuse_reply_buf(req, part.baseAddress, part.count)
                return
            }
            context.serve(req, "read") { () throws(FSError) in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
                defer { buffer.deallocate() }
                let count = try context.fileSystem.read(handle: info!.pointee.fh, offset: Int64(offset), into: buffer)
                fuse_reply_buf(req, buffer.baseAddress, count)
            }
        }
        ops.write = { req, _, bytes, size, offset, info in
            let context = from(req)
            context.serve(req, "write") { () throws(FSError) in
                let written = try context.fileSystem.write(
                    handle: info!.pointee.fh, offset: Int64(offset),
                    bytes: UnsafeRawBufferPointer(start: bytes, count: size))
                fuse_reply_write(req, written)
            }
        }
        ops.flush = { req, _, info in
            let context = from(req)
            context.serve(req, "flush") { () throws(FSError) in
                try context.fileSystem.flush(handle: info!.pointee.fh)
                fuse_reply_err(req, 0)
            }
        }
        ops.fsync = { req, _, _, info in
            let context = from(req)
            context.serve(req, "fsync") { () throws(FSError) in
                try context.fileSystem.synchronize(handle: info!.pointee.fh)
                fuse_reply_err(req, 0)
            }
        }
        ops.release = { req, _, info in
            from(req).fileSystem.release(handle: info!.pointee.fh)
            fuse_reply_err(req, 0)
        }
        ops.opendir = { req, ino, info in
            let context = from(req)
            context.serve(req, "opendir") { () throws(FSError) in
                let entries = try context.fileSystem.listDirectory(ino: ino, caller: caller(req))
                info!.pointee.fh = context.openListing(entries)
                fuse_reply_open(req, info)
            }
        }
        ops.readdir = { req, _, size, offset, info in
            let context = from(req)
            guard let entries = context.listing(info!.pointee.fh) else {
                fuse_reply_err(req, EBADF)
                return
            }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
            defer { buffer.deallocate() }
            fuse_reply_buf(req, buffer.baseAddress, pack(entries, from: Int(offset), into: buffer))
        }
        ops.releasedir = { req, _, info in
            from(req).closeListing(info!.pointee.fh)
            fuse_reply_err(req, 0)
        }
        ops.fsyncdir = { req, _, _, _ in fuse_reply_err(req, 0) }
        ops.statfs = { req, _ in
            let stats = from(req).fileSystem.statistics()
            var st = statvfs()
            st.f_bsize = UInt(stats.blockSize)
            st.f_frsize = UInt(stats.blockSize)
            st.f_blocks = UInt(stats.blocks)
            st.f_bfree = UInt(stats.freeBlocks)
            st.f_bavail = UInt(stats.freeBlocks)
            st.f_files = UInt(stats.files)
            st.f_namemax = UInt(stats.nameMax)
            fuse_reply_statfs(req, &st)
        }
        return ops
    }()
}

extension OperationContext {
    /// Packs `entries` from index `offset` into `buffer` as the kernel's directory records and returns the bytes
    /// used. Each record carries the index of the next entry as its offset, so the kernel's next `readdir` resumes
    /// after the last one that fit (the listing is a snapshot taken at `opendir`).
    static func pack(_ entries: [DirectoryEntry], from offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var used = 0
        var index = max(offset, 0)
        while index < entries.count {
            let entry = entries[index]
            var st = stat()
            st.st_ino = UInt(entry.ino)
            st.st_mode = entry.kind.typeBits
            // libfuse only formats the record; the request is not used.
            let needed = fuse_add_direntry(
                nil, buffer.baseAddress!.assumingMemoryBound(to: CChar.self) + used, buffer.count - used, entry.name,
                &st, off_t(index + 1))
            if needed > buffer.count - used { break }
            used += needed
            index += 1
        }
        return used
    }
}

extension AttributeChanges {
    init(attr: stat, toSet: Int32) {
        self.init()
        if toSet & FUSE_SET_ATTR_MODE != 0 { permissions = attr.st_mode & 0o7777 }
        if toSet & FUSE_SET_ATTR_SIZE != 0 { size = Int64(attr.st_size) }
        let now = Int64(time(nil))
        if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 {
            accessed = now
        } else if toSet & FUSE_SET_ATTR_ATIME != 0 {
            accessed = Int64(attr.st_atim.tv_sec)
        }
        if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 {
            modified = now
        } else if toSet & FUSE_SET_ATTR_MTIME != 0 {
            modified = Int64(attr.st_mtim.tv_sec)
        }
    }
}
