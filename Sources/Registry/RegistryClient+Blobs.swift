import ContentHash
import Foundation
import OCI

extension RegistryClient {
    /// `GET /v2/<name>/blobs/<digest>` for a blob small enough to hold (configs): verified before returning.
    ///
    /// - Parameter limit: a smaller bound than `maxSmallBlobSize` for this blob, enforced while it streams.
    /// - Throws: `RegistryError.digestMismatch`; `.tooLarge` above `limit` or `maxSmallBlobSize`; registry errors.
    public func getBlob(repository: String, digest: Digest, limit: Int? = nil) throws -> Data {
        try Self.checkRepository(repository)
        let call = Call(
            method: .get, url: try url("/v2/\(repository)/blobs/\(digest)"), scope: Self.scope(repository),
            timeouts: options.timeouts)
        let data = try fetch(call, limit: min(limit ?? options.maxSmallBlobSize, options.maxSmallBlobSize)).body
        do { try digest.verify(data) } catch { throw RegistryError(error) }
        return data
    }

    /// Streams a blob, or a byte range of it, into `sink`.
    ///
    /// The whole blob is hashed as it passes and checked at the end: on a mismatch the bytes have already
    /// reached `sink` and this throws, so the caller must only commit what it stored after a normal return.
    /// A range is not verified here (a range has no digest); the caller verifies what it assembles.
    /// Transient failures are retried only before the first byte reaches `sink`.
    ///
    /// - Parameters:
    ///   - range: Bytes `range.lowerBound..<range.upperBound` of the blob, or `nil` for all of it.
    ///   - sink: Receives the bytes in order; an error it throws aborts the download and is rethrown.
    /// - Returns: The number of bytes delivered.
    /// - Throws: `RegistryError.digestMismatch` (whole blob), `.invalidResponse` when a range answer does not
    ///   match the request, `.transport` when the body is cut short, registry errors.
    @discardableResult
    public func getBlob(
        repository: String, digest: Digest, range: Range<Int64>? = nil,
        to sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> Int64 {
        try Self.checkRepository(repository)
        var call = Call(
            method: .get, url: try url("/v2/\(repository)/blobs/\(digest)"), scope: Self.scope(repository),
            timeouts: options.streamingTimeouts)
        guard let range else {
            var hasher = SHA256Hasher()
            var size: Int64 = 0
            _ = try perform(
                call,
                body: { chunk in
                    hasher.update(chunk)
                    size += Int64(chunk.count)
                    try sink(chunk)
                })
            let actual = hasher.finalize()
            guard actual == digest else {
                throw RegistryError.digestMismatch(expected: digest, actual: actual, size: size)
            }
            return size
        }
        guard range.lowerBound >= 0 else { throw RegistryError.invalidArgument("negative range \(range)") }
        if range.isEmpty { return 0 }
        call.headers["Range"] = "bytes=\(range.lowerBound)-\(range.upperBound - 1)"

        // A server that ignores Range answers 200 with the whole blob: skip to the range and stop after it.
        struct Enough: Error {}
        var skip: Int64 = 0
        var wholeBlob = false
        var delivered: Int64 = 0
        let what = "\(registry)/\(repository)@\(digest.short) bytes \(range.lowerBound)..<\(range.upperBound)"
        do {
            _ = try perform(
                call,
                head: { head in
                    skip = 0
                    delivered = 0
                    wholeBlob = head.status != 206
                    if head.status == 206 {
                        guard let contentRange = head.headers["Content-Range"],
                            let (start, end) = Self.parseContentRange(contentRange),
                            start == range.lowerBound, end == min(range.upperBound - 1, end)
                        else {
                            throw RegistryError.invalidResponse(
                                "\(what): Content-Range '\(head.headers["Content-Range"] ?? "")' does not match")
                        }
                    } else {
                        skip = range.lowerBound
                    }
                },
                body: { chunk in
                    var bytes = chunk
                    if skip > 0 {
                        let dropped = Int(min(Int64(bytes.count), skip))
                        bytes = UnsafeRawBufferPointer(rebasing: bytes[dropped...])
                        skip -= Int64(dropped)
                    }
                    let wanted = Int(min(Int64(bytes.count), Int64(range.count) - delivered))
                    if wanted > 0 {
                        try sink(UnsafeRawBufferPointer(rebasing: bytes[..<wanted]))
                        delivered += Int64(wanted)
                    }
                    if wholeBlob && delivered == Int64(range.count) { throw Enough() }
                })
        } catch is Enough {}
        guard delivered == Int64(range.count) else {
            throw RegistryError.transport("\(what): body ended after \(delivered) bytes")
        }
        return delivered
    }

    /// `HEAD /v2/<name>/blobs/<digest>`.
    ///
    /// - Returns: The blob's size, or `nil` when the registry does not have it.
    public func blobExists(repository: String, digest: Digest) throws -> Int64? {
        try Self.checkRepository(repository)
        let call = Call(
            method: .head, url: try url("/v2/\(repository)/blobs/\(digest)"), scope: Self.scope(repository),
            timeouts: options.timeouts)
        do {
            let head = try perform(call)
            guard let length = head.contentLength else {
                throw RegistryError.invalidResponse("HEAD \(call.url.absoluteString): no Content-Length")
            }
            return length
        } catch RegistryError.notFound {
            return nil
        }
    }

    /// `bytes START-END/TOTAL` → (START, END).
    static func parseContentRange(_ value: String) -> (Int64, Int64)? {
        let text = value.trimmingCharacters(in: .whitespaces)
        guard text.hasPrefix("bytes ") else { return nil }
        let spec = text.dropFirst(6).split(separator: "/").first ?? ""
        let bounds = spec.split(separator: "-")
        guard bounds.count == 2, let start = Int64(bounds[0]), let end = Int64(bounds[1]), end >= start else {
            return nil
        }
        return (start, end)
    }
}
