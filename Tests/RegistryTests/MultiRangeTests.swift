import ContentHash
import Foundation
import TestSupport
import Testing

@testable import Registry

@Suite struct MultiRangeTests {
    private static let blob = Data((0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
    private static let digest = SHA256Hasher.digest(blob)
    private static let ranges: [Range<Int64>] = [10..<20, 500..<1500, 9000..<10_000]

    private func client(_ transport: InMemoryRegistry) throws -> RegistryClient {
        try RegistryClient(
            registry: "registry.example", transport: transport,
            options: RegistryOptions(retry: .none, sleep: { _ in }))
    }

    private func expected() -> [Data] { Self.ranges.map { Self.blob[Int($0.lowerBound)..<Int($0.upperBound)] } }

    /// What Go's `http.ServeContent` (the distribution registry) sends for several ranges.
    private static func multipart(_ ranges: [Range<Int64>], boundary: String = "3d6b6a416f9b5") -> Data {
        var body = Data()
        for range in ranges {
            body += Data("\r\n--\(boundary)\r\nContent-Type: application/octet-stream\r\n".utf8)
            body += Data("Content-Range: bytes \(range.lowerBound)-\(range.upperBound - 1)/10000\r\n\r\n".utf8)
            body += blob[Int(range.lowerBound)..<Int(range.upperBound)]
        }
        return body + Data("\r\n--\(boundary)--\r\n".utf8)
    }

    @Test func severalRangesAreOneRequestAnsweredAsMultipart() throws {
        let transport = InMemoryRegistry { request, _ in
            #expect(request.headers["Range"] == "bytes=10-19,500-1499,9000-9999")
            return .init(
                206, headers: ["Content-Type": "multipart/byteranges; boundary=3d6b6a416f9b5"],
                body: Self.multipart(Self.ranges))
        }
        let parts = try client(transport).getBlob(repository: "org/cache", digest: Self.digest, ranges: Self.ranges)
        #expect(parts == expected())
        #expect(transport.requests.count == 1)
    }

    @Test func aBoundaryInsideThePartsDataDoesNotCutIt() throws {
        // The data of a part is taken by its Content-Range's length, not by searching for the boundary.
        let boundary = String(decoding: Self.blob[500..<508].map { $0 % 26 + 97 }, as: UTF8.self)
        let transport = InMemoryRegistry { _, _ in
            .init(
                206, headers: ["Content-Type": "multipart/byteranges; boundary=\"\(boundary)\""],
                body: Self.multipart(Self.ranges, boundary: boundary))
        }
        let parts = try client(transport).getBlob(repository: "org/cache", digest: Self.digest, ranges: Self.ranges)
        #expect(parts == expected())
    }

    @Test func oneCoveringPartOrTheWholeBlobAreCutToTheRanges() throws {
        let covering = InMemoryRegistry { _, _ in
            .init(206, headers: ["Content-Range": "bytes 0-9999/10000"], body: Self.blob)
        }
        #expect(
            try client(covering).getBlob(repository: "org/cache", digest: Self.digest, ranges: Self.ranges)
                == expected())
        let whole = InMemoryRegistry { _, _ in .init(200, body: Self.blob) }
        #expect(
            try client(whole).getBlob(repository: "org/cache", digest: Self.digest, ranges: Self.ranges)
                == expected())
    }

    @Test func anAnswerLackingARangeIsInvalid() throws {
        let transport = InMemoryRegistry { _, _ in
            .init(
                206, headers: ["Content-Type": "multipart/byteranges; boundary=3d6b6a416f9b5"],
                body: Self.multipart(Array(Self.ranges.prefix(2))))
        }
        #expect(throws: RegistryError.self) {
            try client(transport).getBlob(repository: "org/cache", digest: Self.digest, ranges: Self.ranges)
        }
    }

    @Test func rangesOutOfOrderAreRefused() throws {
        let transport = InMemoryRegistry { _, _ in .init(200, body: Self.blob) }
        #expect(throws: RegistryError.self) {
            try client(transport).getBlob(repository: "org/cache", digest: Self.digest, ranges: [500..<600, 0..<10])
        }
        #expect(transport.requests.isEmpty)
    }
}
