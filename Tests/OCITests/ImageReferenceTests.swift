import OCI
import Testing

@Suite struct ImageReferenceTests {
    static let hex = String(repeating: "ab", count: 32)

    @Test(arguments: [
        ("quay.io/org/cache", "quay.io", "org/cache", nil as String?),
        ("quay.io/org/cache:cuda-sm90", "quay.io", "org/cache", "cuda-sm90"),
        ("localhost:5000/a/b", "localhost:5000", "a/b", nil),
        ("localhost/a:v1", "localhost", "a", "v1"),
        ("ubuntu", "registry-1.docker.io", "library/ubuntu", nil),
        ("docker.io/library/ubuntu:22.04", "registry-1.docker.io", "library/ubuntu", "22.04"),
        ("org/cache:t", "registry-1.docker.io", "org/cache", "t"),
    ])
    func parses(_ text: String, _ registry: String, _ repository: String, _ tag: String?) throws {
        let reference = try ImageReference(parsing: text)
        #expect(reference.registry == registry)
        #expect(reference.repository == repository)
        #expect(reference.tag == tag)
        #expect(reference.isRepositoryOnly == (tag == nil))
    }

    @Test func aDigestPinsTheReferenceAndWinsOverTheTag() throws {
        let reference = try ImageReference(parsing: "127.0.0.1:5000/org/cache:t@sha256:\(Self.hex)")
        #expect(reference.digest?.hex == Self.hex)
        #expect(reference.reference == "sha256:\(Self.hex)")
        #expect(reference.description == "127.0.0.1:5000/org/cache:t@sha256:\(Self.hex)")
        #expect(!reference.isRepositoryOnly)
    }

    @Test(arguments: [
        ("", ImageReference.ValidationError.empty),
        ("quay.io/Org/cache", .invalidRepository("Org/cache")),
        ("quay.io/org//cache", .invalidRepository("org//cache")),
        ("quay.io/org/cache:-bad", .invalidTag("-bad")),
        ("quay.io/org/cache@sha256:1234", .invalidDigest("sha256:1234")),
    ])
    func refuses(_ text: String, _ expected: ImageReference.ValidationError) {
        #expect(throws: expected) { try ImageReference(parsing: text) }
    }

    @Test func digestsRoundTripAndRefuseOtherAlgorithmsAndLengths() throws {
        let digest = try Digest(parsing: "sha256:\(Self.hex)")
        #expect(digest.description == "sha256:\(Self.hex)")
        #expect(digest.short == "sha256:" + Self.hex.prefix(12))
        #expect(try Digest(hex: Self.hex) == digest)
        #expect(throws: (any Error).self) { try Digest(parsing: "sha512:\(Self.hex)") }
        #expect(throws: (any Error).self) { try Digest(parsing: "sha256:\(Self.hex.dropLast())") }
        #expect(throws: (any Error).self) { try Digest(parsing: "sha256:" + String(repeating: "G", count: 64)) }
    }
}
