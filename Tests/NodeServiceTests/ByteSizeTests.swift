import Testing

@testable import NodeService

@Suite struct ByteSizeTests {
    @Test(
        arguments: [
            ("0", 0), ("1048576", 1_048_576), ("2G", 2 << 30), ("2g", 2 << 30), ("2GiB", 2 << 30), ("2GB", 2 << 30),
            ("512M", 512 << 20), ("1.5G", 3 << 29), ("10K", 10_240), ("1T", 1 << 40), (" 3M ", 3 << 20), ("7B", 7),
        ] as [(String, Int64)])
    func parses(text: String, bytes: Int64) throws {
        #expect(try ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "G", "-1G", "2X", "1e3", "two", "1.2.3M", "99999999999T", "0x10"])
    func rejects(text: String) {
        #expect(throws: ServiceError.invalidSize(text)) { try ByteSize.parse(text) }
    }
}
