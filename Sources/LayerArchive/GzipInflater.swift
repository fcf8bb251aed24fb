import CArchive
import Foundation

/// Streaming gzip decompression: bytes in as they arrive, decompressed bytes out to a sink. It runs on the thread
/// that receives the layer, so decompression overlaps the tar reading and hashing on the unpacking thread (libarchive
/// would decompress on that one thread, and it checks neither a member's CRC-32 nor its length: zlib here checks
/// both). A stream of several members, as eStargz writes, is decompressed member after member. zlib is the library
/// libarchive itself links for gzip; only this file and `EStargz` touch a `z_stream`.
///
/// Not for concurrent use: one producer feeds it.
final class GzipInflater {
    private let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    private let output: UnsafeMutableRawBufferPointer
    /// Bytes out so far, over all members.
    private(set) var produced: Int64 = 0
    /// True between members: the last one ended and no byte of another has arrived.
    private var betweenMembers = false
    /// Bytes after the last member: only zeros (padding some writers add) are tolerated.
    private var trailingNonZero = false
    private var initialized = false

    /// - Parameter chunk: how many decompressed bytes each call of the sink receives at most.
    init(chunk: Int = 1 << 20) {
        output = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        stream.initialize(to: z_stream())
        initialized = mcvfs_inflate_init_gzip(stream) == Z_OK
    }

    deinit {
        if initialized { inflateEnd(stream) }
        stream.deallocate()
        output.deallocate()
    }

    /// Decompresses `input`, handing the output to `sink` in chunks.
    /// - Throws: `TarError.corrupt` for damaged data (a bad CRC or length included); what `sink` throws.
    func inflate(_ input: UnsafeRawBufferPointer, into sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard initialized else { throw TarError.corrupt(path: nil, reason: "gzip: zlib failed to initialise") }
        guard var next = input.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        var remaining = input.count
        while remaining > 0 {
            if betweenMembers {
                // Another member must start with the gzip magic; zeros after the last one are padding.
                if next.pointee != 0x1f {
                    trailingNonZero =
                        trailingNonZero || UnsafeBufferPointer(start: next, count: remaining).contains { $0 != 0 }
                    if trailingNonZero { throw TarError.corrupt(path: nil, reason: "gzip: data after the last member") }
                    return
                }
                inflateReset(stream)
                betweenMembers = false
            }
            stream.pointee.next_in = UnsafeMutablePointer(mutating: next)
            stream.pointee.avail_in = UInt32(min(remaining, Int(UInt32.max)))
            let fed = Int(stream.pointee.avail_in)
            repeat {
                stream.pointee.next_out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
                stream.pointee.avail_out = UInt32(output.count)
                let code = CArchive.inflate(stream, Z_NO_FLUSH)
                guard code == Z_OK || code == Z_STREAM_END || code == Z_BUF_ERROR else {
                    let reason = stream.pointee.msg.map { String(cString: $0) } ?? "inflate error \(code)"
                    throw TarError.corrupt(path: nil, reason: "gzip: \(reason) after \(produced) bytes")
                }
                let n = output.count - Int(stream.pointee.avail_out)
                if n > 0 {
                    produced += Int64(n)
                    try sink(UnsafeRawBufferPointer(rebasing: output[..<n]))
                }
                if code == Z_STREAM_END {
                    betweenMembers = true
                    break
                }
                // No progress is possible without more input.
                if code == Z_BUF_ERROR { break }
            } while stream.pointee.avail_in > 0 || stream.pointee.avail_out == 0
            let consumed = fed - Int(stream.pointee.avail_in)
            next += consumed
            remaining -= consumed
        }
    }

    /// Checks that the stream ended at the end of a member.
    /// - Throws: `TarError.corrupt` when it was cut short (or never started).
    func finish() throws {
        guard betweenMembers else {
            throw TarError.corrupt(path: nil, reason: "gzip stream cut short after \(produced) bytes")
        }
    }
}
