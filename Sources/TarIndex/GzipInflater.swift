import CIsal
import Foundation

/// Streaming gzip decompression with ISA-L's inflate: bytes in as they arrive, decompressed bytes out to a sink.
/// Every member's header is parsed and its CRC-32 and length checked (a stream of several members, as eStargz
/// writes, is decompressed member after member). Only this file touches `inflate_state`.
///
/// Not for concurrent use: one producer feeds it.
final class GzipInflater {
    private let state = UnsafeMutablePointer<inflate_state>.allocate(capacity: 1)
    private let output: UnsafeMutableRawBufferPointer
    /// Bytes out so far, over all members.
    private(set) var produced: Int64 = 0
    /// True between members: the last one ended and no byte of another has arrived.
    private var betweenMembers = false
    /// Bytes after the last member: only zeros (padding some writers add) are tolerated.
    private var trailingNonZero = false

    /// - Parameter chunk: how many decompressed bytes each call of the sink receives at most.
    init(chunk: Int = 1 << 20) {
        output = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        isal_inflate_init(state)
        state.pointee.crc_flag = UInt32(ISAL_GZIP)
    }

    deinit {
        state.deallocate()
        output.deallocate()
    }

    /// Decompresses `input`, handing the output to `sink` in chunks.
    /// - Throws: `TarError.corrupt` for damaged data (a bad CRC included); what `sink` throws.
    func inflate(_ input: UnsafeRawBufferPointer, into sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard var next = input.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        var remaining = input.count
        while remaining > 0 {
            if betweenMembers {
                // Another member must start with the gzip magic; zeros after the last one are padding.
                if next.pointee != 0x1f {
                    trailingNonZero =
                        trailingNonZero
                        || UnsafeBufferPointer(start: next, count: remaining).contains {
                            $0 != 0
                        }
                    if trailingNonZero { throw TarError.corrupt(path: nil, reason: "gzip: data after the last member") }
                    return
                }
                isal_inflate_reset(state)
                state.pointee.crc_flag = UInt32(ISAL_GZIP)
                betweenMembers = false
            }
            state.pointee.next_in = UnsafeMutablePointer(mutating: next)
            state.pointee.avail_in = UInt32(min(remaining, Int(UInt32.max)))
            let fed = Int(state.pointee.avail_in)
            repeat {
                state.pointee.next_out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
                state.pointee.avail_out = UInt32(output.count)
                let code = isal_inflate(state)
                guard code == ISAL_DECOMP_OK || code == ISAL_END_INPUT || code == ISAL_OUT_OVERFLOW else {
                    throw TarError.corrupt(path: nil, reason: "gzip: \(Self.describe(code)) after \(produced) bytes")
                }
                let n = output.count - Int(state.pointee.avail_out)
                if n > 0 {
                    produced += Int64(n)
                    try sink(UnsafeRawBufferPointer(rebasing: output[..<n]))
                }
                if state.pointee.block_state == ISAL_BLOCK_FINISH {
                    betweenMembers = true
                    break
                }
            } while state.pointee.avail_in > 0 || state.pointee.avail_out == 0
            let consumed = fed - Int(state.pointee.avail_in)
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

    private static func describe(_ code: Int32) -> String {
        switch code {
        case ISAL_INVALID_BLOCK: return "invalid deflate block"
        case ISAL_INVALID_SYMBOL: return "invalid deflate symbol"
        case ISAL_INVALID_LOOKBACK: return "invalid back-reference distance"
        case ISAL_INVALID_WRAPPER: return "invalid gzip header"
        case ISAL_UNSUPPORTED_METHOD: return "unsupported compression method"
        case ISAL_INCORRECT_CHECKSUM: return "CRC or length mismatch"
        default: return "inflate error \(code)"
        }
    }
}
