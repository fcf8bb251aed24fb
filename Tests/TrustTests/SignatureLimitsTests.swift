import BlobCache
import ContentHash
import Foundation
import OCI
import Registry
import TestSupport
import Testing
import Verification

@testable import Trust

/// What a registry writer without a key can put next to an image's signatures, and what a verifier then reads.
@Suite struct SignatureLimitsTests {
    let key = try! PrivateKey.generateP256()
    let image = SHA256Hasher.digest(Data("image".utf8))

    /// Rewrites the `.sig` image of `image` with `before` and `after` around its layers, as a writer can.
    func surround(_ source: MemorySource, before: [Descriptor] = [], after: [Descriptor] = []) throws {
        let tag = CosignSignature.signatureTag(for: image)
        var manifest = try JSONDecoder().decode(Manifest.self, from: try #require(source.blobs[source.tags[tag]!]))
        manifest.layers = before + manifest.layers + after
        source.tags[tag] = source.add(try JSONEncoder().encode(manifest))
    }

    /// A simple-signing layer whose descriptor says `size` for `blob` (a registry writer chooses both).
    func junk(_ source: MemorySource, _ blob: Data, size: Int? = nil) -> Descriptor {
        Descriptor(
            mediaType: SimpleSigningPayload.mediaType, digest: source.add(blob), size: Int64(size ?? blob.count),
            annotations: [CosignSignature.signatureAnnotation: "AAAA"])
    }

    func verdict(_ found: SignatureFinder.Found) -> Verdict {
        ImageVerifier.verify(found, digest: image, policy: .keys([key.publicKey]))
    }

    @Test func payloadsPastTheirLimitAreNotReadAndAValidSignatureStillVerifies() throws {
        let source = MemorySource()
        try source.sign(image, with: key)
        let big = Data(repeating: 7, count: 1 << 20)
        // Sixteen layers that say 1 MiB (never fetched), and one that says 100 bytes for the same 1 MiB (cut off
        // at 100 as it streams).
        try surround(source, before: Array(repeating: junk(source, big), count: 16) + [junk(source, big, size: 100)])
        let found = try SignatureFinder(source: source).signatures(for: image)
        #expect(found.legacy.count == 1)
        #expect(found.problems.count == 17)
        #expect(
            found.problems.filter { $0.contains("at most \(SignatureLimits.standard.payloadBytes) are read") }.count
                == 16)
        #expect(source.bytesRead < 64 << 10, "read \(source.bytesRead) bytes")
        #expect(verdict(found).isTrusted)
    }

    @Test func layersPastTheCapAreNotRead() throws {
        let source = MemorySource()
        try source.sign(image, with: key)
        try surround(source, after: (0..<10).map { junk(source, Data("junk \($0)".utf8)) })
        var limits = SignatureLimits.standard
        limits.layersPerSignatureImage = 3
        let found = try SignatureFinder(source: source, limits: limits).signatures(for: image)
        #expect(found.legacy.count == 3)
        #expect(found.problems.contains { $0.hasSuffix("8 of its 11 signature layers are not read (at most 3 are)") })
        #expect(verdict(found).accepted.count == 1)
        // The manifest and three payloads: nothing else was asked for.
        #expect(source.calls == 1 + 3 + 1)
    }

    @Test func everythingReadForOneDigestSpendsOneBudget() throws {
        let source = MemorySource()
        try source.sign(image, with: key)
        try surround(source, after: (0..<40).map { junk(source, Data(repeating: UInt8($0), count: 1000)) })
        try source.attach(image, with: key)
        var limits = SignatureLimits.standard
        limits.totalBytes = 16 << 10
        let recorder = RecordingSource(source)
        let found = try SignatureFinder(source: recorder, limits: limits).signatures(for: image)
        #expect(source.bytesRead <= limits.totalBytes)
        #expect(recorder.recording.blobs.values.reduce(0) { $0 + $1.count } <= limits.totalBytes)
        #expect(found.problems.contains { $0.contains("pass the 16384-byte limit on what one verification reads") })
        // The signature read before the budget ran out verifies; the bundle, past it, was not read.
        #expect(verdict(found).accepted.map(\.layout) == [.legacy])
    }

    @Test func whyAnArtifactIsNotReadReadsAsAProblemNamesIt() {
        #expect(
            SignatureFinder.NotRead.tooLarge(size: 1 << 20, limit: 4096).description
                == "1048576 bytes (at most 4096 are read)")
        #expect(
            SignatureFinder.NotRead.overBudget(total: 16384).description
                == "not read: with it, this image's signature artifacts pass the 16384-byte limit on what one "
                + "verification reads")
    }

    @Test func bundlesAndReferrersPastTheirCapsAreNotRead() throws {
        let source = MemorySource()
        try source.attach(image, with: key)
        // A referrer whose manifest lists a 2 MiB bundle and five small ones, then 40 more referrers.
        let big = Data(repeating: 1, count: 2 << 20)
        let layers = ([big] + (0..<5).map { Data("{\"junk\": \($0)}".utf8) }).map {
            Descriptor(mediaType: SigstoreBundle.mediaTypeV03, digest: source.add($0), size: Int64($0.count))
        }
        var manifest = Manifest(
            config: Descriptor(
                mediaType: "application/vnd.oci.empty.v1+json", digest: source.add(Data("{}".utf8)), size: 2),
            layers: layers)
        manifest.artifactType = SigstoreBundle.mediaTypeV03
        let data = try JSONEncoder().encode(manifest)
        var descriptor = Descriptor(mediaType: MediaType.ociManifest, digest: source.add(data), size: Int64(data.count))
        descriptor.artifactType = SigstoreBundle.mediaTypeV03
        source.referrers[image, default: []] += Array(repeating: descriptor, count: 41)
        let found = try SignatureFinder(source: source).signatures(for: image)
        let limits = SignatureLimits.standard
        #expect(found.bundles.count == 1)
        #expect(
            found.problems.contains {
                $0 == "10 of the 42 bundle referrers of \(image.short) are not read (at most 32 are)"
            })
        #expect(found.problems.filter { $0.hasSuffix("2 of its 6 bundles are not read (at most 4 are)") }.count == 31)
        #expect(found.problems.filter { $0.contains("at most \(limits.bundleBytes) are read") }.count == 31)
        #expect(source.bytesRead < 1 << 20, "read \(source.bytesRead) bytes")
        #expect(verdict(found).accepted.map(\.layout) == [.bundle])
    }

    @Test func aStoredArtifactPastItsLimitIsNotRead() throws {
        let directory = try TemporaryDirectory()
        let store = try SignatureStore(layout: CacheLayout(root: directory.path))
        let source = MemorySource()
        try source.sign(image, with: key)
        let recorder = RecordingSource(source)
        _ = try SignatureFinder(source: recorder).signatures(for: image)
        try store.save(recorder.recording, for: image)
        let stored = try #require(try store.source(for: image))
        let tag = CosignSignature.signatureTag(for: image)
        let manifest = try #require(source.tags[tag])
        #expect(try stored.manifest(tag, limit: 1 << 20)?.digest == manifest)
        #expect(throws: VerificationError.self) { try stored.manifest(tag, limit: 16) }
        #expect(throws: VerificationError.self) { try stored.blob(manifest, limit: 16) }
    }
}
