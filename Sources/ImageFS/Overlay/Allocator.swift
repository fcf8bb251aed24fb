import Glibc

/// How the overlay's memory goes back to the system once the kernel lets go of inodes (glibc's `malloc_trim` and
/// `mallopt` are not in Swift's Glibc overlay).
///
/// The inode table's storage grows and shrinks by megabytes with what the kernel holds. glibc raises its mmap
/// threshold to the largest block freed (and its trim threshold to twice that), after which such blocks come
/// from per-thread heaps whose freed tops are never given back. A fixed threshold keeps blocks of 4 MiB and more
/// mapped (freed means unmapped) and heaps trimmed; smaller ones, the bridge's 1 MiB read buffers among them,
/// stay on the heaps. After the table shrinks, `malloc_trim` returns the free pages inside the heaps.
enum Allocator {
    private typealias Trim = @convention(c) (Int) -> Int32
    private typealias Option = @convention(c) (Int32, Int32) -> Int32

    private static let trim = unsafeBitCast(
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim")!, to: Trim.self)

    /// Once per process; `M_MMAP_THRESHOLD` is -3 in malloc.h.
    static let keepLargeBlocksMapped: Void = {
        let mallopt = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt")!, to: Option.self)
        _ = mallopt(-3, 4 << 20)
    }()

    static func releaseFreePages() { _ = trim(0) }
}
