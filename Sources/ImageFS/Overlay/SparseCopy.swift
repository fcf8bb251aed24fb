import Glibc
import TimeBudget

/// Copies a user's file into a shadow at copy-up: its data only, its holes left holes.
///
/// A user makes a file of any apparent size for free (`truncate -s 16T`); the daemon, which copies as root, must
/// not pay for that size. So it copies only the extents `SEEK_DATA`/`SEEK_HOLE` report (and skips a chunk of
/// zeros even where the filesystem reports one as data), refuses a file with more than `dataLimit` bytes of data
/// (`EFBIG`), and stops at the operation's deadline. The caller discards the shadow when it throws: the user's
/// file is unchanged and no partial copy remains.
enum SparseCopy {
    /// The most bytes of data one copy-up writes: one writer's open costs the cache filesystem at most this much.
    /// Larger files stay readable; writing one means replacing it whole (`O_TRUNC`), which copies nothing.
    static let dataLimit: Int64 = 4 << 30

    static let chunk = 1 << 20

    /// Copies `source` from its start to `target`, which ends with `source`'s size.
    /// - Throws: `FSError.tooLarge` past `limit` bytes of data, `.unavailable` when the operation's deadline
    ///   (`Deadline.current`) passes first.
    static func copy(from source: Int32, to target: Int32, limit: Int64 = dataLimit) throws(FSError) {
        var info = stat()
        guard fstat(source, &info) == 0 else { throw UpperLayer.error(errno) }
        let size = Int64(info.st_size)
        // Allocated blocks bound the data before a byte is read (a filesystem without holes reports them all).
        if Int64(info.st_blocks) * 512 > limit && size > limit { throw .tooLarge }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var copied: Int64 = 0
        var offset: Int64 = 0
        while offset < size, let extent = try dataExtent(in: source, from: offset, size: size) {
            offset = extent.lowerBound
            while offset < extent.upperBound {
                if Deadline.current?.hasPassed == true {
                    throw .unavailable(reason: "copy-up stopped at the operation's deadline after \(copied) bytes")
                }
                let wanted = Int(min(Int64(chunk), extent.upperBound - offset))
                let count = try Reads.fill(
                    UnsafeMutableRawBufferPointer(rebasing: buffer[0..<wanted]), from: source, offset: offset)
                if count == 0 { break }
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
                if bytes.contains(where: { $0 != 0 }) {
                    copied += Int64(count)
                    if copied > limit { throw .tooLarge }
                    try OverlayFileSystem.write(bytes, to: target, at: offset)
                }
                offset += Int64(count)
            }
        }
        guard ftruncate(target, off_t(size)) == 0 else { throw UpperLayer.error(errno) }
    }

    /// The next range of data at or after `offset`, nil when only a hole (or nothing) follows.
    private static func dataExtent(in fd: Int32, from offset: Int64, size: Int64) throws(FSError) -> Range<Int64>? {
        let start = lseek(fd, off_t(offset), seekData)
        if start < 0 {
            if errno == ENXIO { return nil }
            // A filesystem without SEEK_DATA: everything is data (its zero chunks are still skipped).
            if errno == EINVAL { return offset..<size }
            throw UpperLayer.error(errno)
        }
        let end = lseek(fd, start, seekHole)
        guard end >= 0 else { throw UpperLayer.error(errno) }
        return Int64(start)..<min(Int64(end), size)
    }

    /// `lseek`'s `SEEK_DATA` and `SEEK_HOLE` (Linux's values): glibc declares them only under `_GNU_SOURCE`, which
    /// Swift's Glibc module is not built with.
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4
}
