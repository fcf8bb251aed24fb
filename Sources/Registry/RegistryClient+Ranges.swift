import Foundation
import OCI

extension RegistryClient {
    /// A multi-range request holds at most this many ranges: its `Range` header stays under the 8 KiB a header
    /// line may have behind common proxies (nginx's `large_client_header_buffers`).
    public static let maxRangesPerRequest = 256

    /// Several byte ranges of a blob in one `GET` (RFC 9110 §14.2: `Range: bytes=A-B,C-D`), answered as
    /// `multipart/byteranges`, so that members scattered over a layer cost one round trip and none of the bytes
    /// between them.
    ///
    /// A server may answer several ranges with one part that covers them, or, ignoring `Range`, with the whole
    /// blob (200): each range is then cut out of what came, and a whole blob is read only up to the last range.
    /// Nothing is verified here (a range has no digest); the caller verifies what it assembles. The body held is
    /// bounded by the blob up to the last range, plus a part header's worth per range.
    ///
    /// - Parameter ranges: Disjoint, non-empty, in ascending order; at most `maxRangesPerRequest`.
    /// - Returns: The bytes of each range, in the order asked.
    /// - Throws: `RegistryError.invalidResponse` when the answer lacks a range or is not what was asked,
    ///   `.invalidArgument` for ranges out of order, registry errors.
    public func getBlob(repository: String, digest: Digest, ranges: [Range<Int64>]) throws -> [Data] {
        guard ranges.count > 1 else {
            return try ranges.map { range in
                var data = Data()
                data.reserveCapacity(Int(range.count))
                try getBlob(repository: repository, digest: digest, range: range) { data.append(contentsOf: $0) }
                return data
            }
        }
        try Self.checkRepository(repository)
        guard ranges.count <= Self.maxRangesPerRequest, ranges.allSatisfy({ !$0.isEmpty && $0.lowerBound >= 0 }),
            zip(ranges, ranges.dropFirst()).allSatisfy({ $0.upperBound <= $1.lowerBound })
        else {
            throw RegistryError.invalidArgument(
                "ranges must be \(Self.maxRangesPerRequest) at most, disjoint, ascending")
        }
        var call = Call(
            method: .get, url: try url("/v2/\(repository)/blobs/\(digest)"), scope: Self.scope(repository),
            timeouts: options.streamingTimeouts)
        call.headers["Range"] = "bytes=" + ranges.map { "\($0.lowerBound)-\($0.upperBound - 1)" }.joined(separator: ",")
        let what = "\(registry)/\(repository)@\(digest.short) (\(ranges.count) ranges)"
        let last = ranges[ranges.count - 1].upperBound
        // Whatever the form of the answer, it needs no more than the blob up to the last range, and part headers.
        let limit = last + Int64(ranges.count) * 512 + 4096

        struct Enough: Error {}
        var body = Data()
        var status = 0
        var contentType = ""
        var contentRange = ""
        do {
            _ = try perform(
                call, restartable: true,
                head: { head in
                    body = Data()
                    status = head.status
                    contentType = head.headers["Content-Type"] ?? ""
                    contentRange = head.headers["Content-Range"] ?? ""
                },
                body: { chunk in
                    if status == 206 {
                        guard Int64(body.count + chunk.count) <= limit else {
                            throw RegistryError.tooLarge(url: what, limit: limit)
                        }
                        body.append(contentsOf: chunk)
                    } else {
                        // The whole blob: keep what the last range needs, no more.
                        let take = Int(min(Int64(chunk.count), last - Int64(body.count)))
                        body.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[..<take]))
                        if Int64(body.count) == last { throw Enough() }
                    }
                })
        } catch is Enough {}

        var parts: [(start: Int64, bytes: Data)]
        if status != 206 {
            parts = [(0, body)]
        } else if contentType.lowercased().hasPrefix("multipart/byteranges") {
            parts = try Self.multipartParts(body, contentType: contentType, what: what)
        } else {
            guard let (start, _) = Self.parseContentRange(contentRange) else {
                throw RegistryError.invalidResponse("\(what): 206 without a Content-Range")
            }
            parts = [(start, body)]
        }
        return try ranges.map { range in
            guard
                let part = parts.first(where: {
                    $0.start <= range.lowerBound && range.upperBound <= $0.start + Int64($0.bytes.count)
                })
            else { throw RegistryError.invalidResponse("\(what): the answer lacks bytes \(range)") }
            let lower = part.bytes.startIndex + Int(range.lowerBound - part.start)
            return part.bytes.subdata(in: lower..<(lower + range.count))
        }
    }

    /// The parts of a `multipart/byteranges` body, each with its first byte's offset in the blob (each part's
    /// length is its `Content-Range`'s, so a boundary string inside the data cannot cut it).
    static func multipartParts(
        _ body: Data, contentType: String, what: String
    ) throws -> [(start: Int64, bytes: Data)] {
        guard
            let boundary = contentType.split(separator: ";").lazy
                .map({ $0.trimmingCharacters(in: .whitespaces) })
                .first(where: { $0.lowercased().hasPrefix("boundary=") })?
                .dropFirst("boundary=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        else { throw RegistryError.invalidResponse("\(what): multipart answer without a boundary") }
        let delimiter = Data(("--" + boundary).utf8)
        let headerEnd = Data("\r\n\r\n".utf8)
        var parts: [(start: Int64, bytes: Data)] = []
        var cursor = body.startIndex
        while let open = body.range(of: delimiter, in: cursor..<body.endIndex) {
            let afterDelimiter = open.upperBound
            // The closing delimiter (`--boundary--`) ends the body.
            if body[afterDelimiter...].starts(with: Data("--".utf8)) { break }
            guard let headersEnd = body.range(of: headerEnd, in: afterDelimiter..<body.endIndex) else {
                throw RegistryError.invalidResponse("\(what): a multipart part without its headers' end")
            }
            let headers = String(decoding: body[afterDelimiter..<headersEnd.lowerBound], as: UTF8.self)
            let rangeLine = headers.split(whereSeparator: \.isNewline).first {
                $0.lowercased().hasPrefix("content-range:")
            }
            guard let rangeLine, let (start, end) = parseContentRange(String(rangeLine.dropFirst(14))) else {
                throw RegistryError.invalidResponse("\(what): a multipart part without a Content-Range")
            }
            let dataStart = headersEnd.upperBound
            let length = Int(end - start + 1)
            guard body.endIndex - dataStart >= length else {
                throw RegistryError.invalidResponse("\(what): a multipart part cut short")
            }
            parts.append((start, body.subdata(in: dataStart..<(dataStart + length))))
            cursor = dataStart + length
        }
        return parts
    }
}
