import Foundation

/// The overlay's open files. A plain value: `OverlayFileSystem` keeps it in a `Mutex`.
struct OverlayHandles {
    /// An open writer: a private copy in the upper's work directory, published over the file by one `rename` at
    /// its first close (so a crash mid-write leaves the old content or none, never a torn file, and readers keep
    /// the content they opened until then).
    struct Shadow {
        var fd: Int32
        /// The work file until the first close publishes it; nil afterwards (writes then go in place).
        var workName: String?
        var path: [String]
        var upper: UpperLayer
        var append: Bool
        /// A copy of an image file: publishing it changes what the name means for this caller, which the kernel
        /// must be told (it may have cached the name as the image file's).
        var copiesImageFile = false
    }

    enum Handle {
        /// An image file, through the lower's own handle.
        case lower(UInt64)
        /// An upper file opened for reading: the version it names stays readable whatever is published later.
        case descriptor(Int32)
        /// An upper file served rewritten (a group file relocated to this mount's root).
        case bytes(Data)
        case shadow(Shadow)
    }

    private(set) var open: [UInt64: Handle] = [:]
    private var next: UInt64 = 1

    var count: Int { open.count }

    subscript(handle: UInt64) -> Handle? { open[handle] }

    mutating func insert(_ handle: Handle) -> UInt64 {
        defer { next += 1 }
        open[next] = handle
        return next
    }

    mutating func remove(_ handle: UInt64) -> Handle? { open.removeValue(forKey: handle) }

    /// The shadow's copy is now the file (its first close published it).
    mutating func published(_ handle: UInt64) {
        guard case .shadow(var shadow)? = open[handle] else { return }
        shadow.workName = nil
        open[handle] = .shadow(shadow)
    }

    /// The copy of the newest writer of `path` that has not published yet: what `stat` shows until it closes, so a
    /// writer sees its own size (readers read the version they opened, whatever `stat` says).
    func unpublishedShadow(in upper: UpperLayer, at path: [String]) -> Int32? {
        var newest: (handle: UInt64, fd: Int32)?
        for (key, handle) in open {
            guard case .shadow(let shadow) = handle, shadow.upper === upper, shadow.path == path,
                shadow.workName != nil, key > newest?.handle ?? 0
            else { continue }
            newest = (key, shadow.fd)
        }
        return newest?.fd
    }

    /// Open writers follow their file when it (or a directory above it) is renamed before they close it.
    mutating func moveShadows(in upper: UpperLayer, from source: [String], to target: [String]) {
        for (key, handle) in open {
            guard case .shadow(var shadow) = handle, shadow.upper === upper, shadow.path.starts(with: source)
            else { continue }
            shadow.path = target + shadow.path.dropFirst(source.count)
            open[key] = .shadow(shadow)
        }
    }

    /// Writers of a file that is deleted or replaced keep writing to their copy, but it must never be published
    /// over the name afterwards (POSIX: an unlinked open file lives on, nameless, until closed).
    /// - Returns: the work files to discard.
    mutating func orphanShadows(in upper: UpperLayer, at path: [String]) -> [String] {
        var orphaned: [String] = []
        for (key, handle) in open {
            guard case .shadow(var shadow) = handle, shadow.upper === upper, shadow.path == path,
                let workName = shadow.workName
            else { continue }
            orphaned.append(workName)
            shadow.workName = nil
            open[key] = .shadow(shadow)
        }
        return orphaned
    }
}
