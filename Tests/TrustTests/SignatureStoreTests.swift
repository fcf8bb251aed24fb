import BlobCache
import ContentHash
import Foundation
import OCI
import Registry
import TestSupport
import Testing
import Verification

@testable import Trust

/// A registry's signature artifacts in memory: tags, manifests by digest, blobs, referrers.
final class MemorySource: SignatureSource, @unchecked Sendable {
    var tags: [String: Digest] = [:]
    var blobs: [Digest: Data] = [:]
    var referrers: [Digest: [Descriptor]] = [:]
    /// Fail every call as an unreachable registry does.
    var unreachable = false
    private(set) var calls = 0

    func add(_ data: Data) -> Digest {
        let digest = SHA256Hasher.digest(data)
        blobs[digest] = data
        return digest
    }

    /// Bytes returned, in all.
    private(set) var bytesRead = 0

    func manifest(_ reference: String, limit: Int) throws -> FetchedManifest? {
        calls += 1
        if unreachable { throw RegistryError.transport("connection refused") }
        guard let digest = (try? Digest(parsing: reference)) ?? tags[reference], let data = blobs[digest] else {
            return nil
        }
        try check(data, limit: limit)
        return FetchedManifest(
            digest: digest, mediaType: MediaType.ociManifest, data: data,
            document: try ManifestDocument(parsing: data))
    }

    func blob(_ digest: Digest, limit: Int) throws -> Data {
        calls += 1
        if unreachable { throw RegistryError.transport("connection refused") }
        guard let data = blobs[digest] else { throw VerificationError.malformed(what: "blob", reason: "absent") }
        try check(data, limit: limit)
        return data
    }

    /// As `RegistryClient` does while a body streams: past `limit`, nothing more is read.
    private func check(_ data: Data, limit: Int) throws {
        bytesRead += min(data.count, limit)
        guard data.count <= limit else { throw RegistryError.tooLarge(url: "memory", limit: Int64(limit)) }
    }

    func referrers(of digest: Digest) throws -> [Descriptor] {
        calls += 1
        if unreachable { throw RegistryError.transport("connection refused") }
        return referrers[digest] ?? []
    }

    /// A legacy `.sig` image holding `signature` for `digest`.
    func sign(_ digest: Digest, with key: PrivateKey) throws {
        var image = SignatureImage()
        try image.append(try CosignSignature.sign(digest: digest, reference: "r", key: key))
        for (_, blob) in image.newBlobs { _ = add(blob) }
        _ = add(image.config)
        tags[CosignSignature.signatureTag(for: digest)] = add(image.manifestData)
    }

    /// A bundle referrer for `digest`.
    func attach(_ digest: Digest, with key: PrivateKey) throws {
        let bundle = add(try SigstoreBundle.signImage(digest: digest, key: key))
        let config = add(Data("{}".utf8))
        var manifest = Manifest(
            mediaType: MediaType.ociManifest,
            config: Descriptor(mediaType: "application/vnd.oci.empty.v1+json", digest: config, size: 2),
            layers: [
                Descriptor(mediaType: SigstoreBundle.mediaTypeV03, digest: bundle, size: Int64(blobs[bundle]!.count))
            ])
        manifest.artifactType = SigstoreBundle.mediaTypeV03
        let data = try JSONEncoder().encode(manifest)
        var descriptor = Descriptor(mediaType: MediaType.ociManifest, digest: add(data), size: Int64(data.count))
        descriptor.artifactType = SigstoreBundle.mediaTypeV03
        referrers[digest, default: []].append(descriptor)
    }
}

@Suite struct SignatureStoreTests {
    let key = try! PrivateKey.generateP256()
    let image = SHA256Hasher.digest(Data("image".utf8))

    func stored(_ source: MemorySource, in directory: TemporaryDirectory) throws -> SignatureStore {
        let store = try SignatureStore(layout: CacheLayout(root: directory.path))
        let recorder = RecordingSource(source)
        let found = try SignatureFinder(source: recorder).signatures(for: image)
        #expect(found.legacy.count + found.bundles.count >= 1)
        try store.save(recorder.recording, for: image)
        return store
    }

    @Test func storedSignaturesVerifyAsTheOriginalsDid() throws {
        let directory = try TemporaryDirectory()
        let source = MemorySource()
        try source.sign(image, with: key)
        try source.attach(image, with: key)
        let store = try stored(source, in: directory)
        let replayed = try SignatureFinder(source: try #require(try store.source(for: image))).signatures(for: image)
        #expect(replayed.legacy.count == 1 && replayed.bundles.count == 1 && replayed.problems.isEmpty)
        let verdict = ImageVerifier.verify(replayed, digest: image, policy: .keys([key.publicKey]))
        #expect(verdict.accepted.map(\.layout) == [.legacy, .bundle])
        // Nothing is stored for another image.
        #expect(try store.source(for: SHA256Hasher.digest(Data("other".utf8))) == nil)
    }

    @Test func anArtifactAlteredOnDiskFailsItsCheck() throws {
        let directory = try TemporaryDirectory()
        let source = MemorySource()
        try source.sign(image, with: key)
        let store = try stored(source, in: directory)
        let blobs = directory.url.appendingPathComponent("signatures/blobs/sha256")
        let payload = try #require(source.blobs.first { $0.value.starts(with: Data(#"{"critical""#.utf8)) })
        let file = blobs.appendingPathComponent(payload.key.hex)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file.path)
        var altered = payload.value
        altered[altered.startIndex + 20] ^= 1
        try altered.write(to: file)
        let replayed = try SignatureFinder(source: try #require(try store.source(for: image))).signatures(for: image)
        #expect(replayed.legacy.isEmpty)
        #expect(replayed.problems.count == 1)
        #expect(replayed.problems[0].contains("was altered on disk"))
    }

    @Test func anUnreadableRecordTrustsNothing() throws {
        let directory = try TemporaryDirectory()
        let source = MemorySource()
        try source.sign(image, with: key)
        let store = try stored(source, in: directory)
        try Data("{".utf8).write(
            to: directory.url.appendingPathComponent("signatures/images/sha256/\(image.hex).json"))
        #expect(throws: VerificationError.self) { try store.source(for: image) }
    }
}

@Suite struct ImageVerifierOutageTests {
    let key = try! PrivateKey.generateP256()
    let signed = SHA256Hasher.digest(Data("signed".utf8))
    let unsigned = SHA256Hasher.digest(Data("unsigned".utf8))

    @Test func offlineVerifiesStoredSignaturesOnly() throws {
        let directory = try TemporaryDirectory()
        let store = try SignatureStore(layout: CacheLayout(root: directory.path))
        let source = MemorySource()
        try source.sign(signed, with: key)
        let policy = TrustPolicy.keys([key.publicKey])
        for digest in [signed, unsigned] {
            let recorder = RecordingSource(source)
            _ = try SignatureFinder(source: recorder).signatures(for: digest)
            try store.save(recorder.recording, for: digest)
        }
        let offline = ImageVerifier(policy: policy, client: nil, repository: "r", store: store, cache: VerdictCache())
        let verdict = offline.verify(signed)
        #expect(verdict.isTrusted)
        #expect(verdict.source == .stored(reason: "offline"))
        let refused = offline.verify(unsigned)
        #expect(!refused.isTrusted && refused.description == "no signature found for \(unsigned)")
        let never = offline.verify(SHA256Hasher.digest(Data("new".utf8)))
        #expect(never.rejected.map(\.reason) == ["offline and no signature of it is stored"])
        // Without a store nothing can be verified offline.
        let bare = ImageVerifier(policy: policy, client: nil, repository: "r", cache: VerdictCache())
        #expect(!bare.verify(signed).isTrusted)
    }

    @Test func anUnreachableRegistryFallsBackToTheStoreAndIsNotAskedAgain() throws {
        let directory = try TemporaryDirectory()
        let store = try SignatureStore(layout: CacheLayout(root: directory.path))
        let registry = MemorySource()
        try registry.sign(signed, with: key)
        try registry.attach(signed, with: key)
        let policy = TrustPolicy.keys([key.publicKey])
        let online = ImageVerifier(
            policy: policy, source: registry, repository: "r", store: store, cache: VerdictCache())
        #expect(online.verify(signed).source == .registry)
        #expect(online.verify(unsigned).source == .registry)
        // A new process (another cache) during an outage.
        registry.unreachable = true
        let cache = VerdictCache()
        let outage = ImageVerifier(policy: policy, source: registry, repository: "r", store: store, cache: cache)
        let verdict = outage.verify(signed)
        #expect(verdict.isTrusted && verdict.accepted.count == 2)
        guard case .stored(let reason) = verdict.source else {
            Issue.record("verified from \(verdict.source)")
            return
        }
        #expect(reason.hasPrefix("the registry is unreachable"))
        let asked = registry.calls
        #expect(!outage.verify(unsigned).isTrusted)
        #expect(registry.calls == asked)
        // The trusted verdict is reused: asking again reads nothing.
        #expect(outage.verify(signed).isTrusted)
        #expect(registry.calls == asked)
    }

    @Test func anUnusableAnswerDoesNotEraseAGoodRecord() throws {
        let directory = try TemporaryDirectory()
        let store = try SignatureStore(layout: CacheLayout(root: directory.path))
        let registry = MemorySource()
        try registry.sign(signed, with: key)
        let policy = TrustPolicy.keys([key.publicKey])
        #expect(
            ImageVerifier(policy: policy, source: registry, repository: "r", store: store, cache: VerdictCache())
                .verify(signed).isTrusted)
        // The registry now serves the .sig manifest but not its payload: a problem, nothing verifies.
        let payload = try #require(registry.blobs.first { $0.value.starts(with: Data(#"{"critical""#.utf8)) }).key
        registry.blobs[payload] = nil
        let flaky = ImageVerifier(
            policy: policy, source: registry, repository: "r", store: store, cache: VerdictCache())
        #expect(!flaky.verify(signed).isTrusted)
        let offline = ImageVerifier(policy: policy, source: nil, repository: "r", store: store, cache: VerdictCache())
        #expect(offline.verify(signed).isTrusted)
        // A clean answer without signatures replaces it: the signature was removed.
        registry.tags = [:]
        _ = ImageVerifier(policy: policy, source: registry, repository: "r", store: store, cache: VerdictCache())
            .verify(signed)
        #expect(
            !ImageVerifier(policy: policy, source: nil, repository: "r", store: store, cache: VerdictCache())
                .verify(signed).isTrusted)
    }

    @Test func onlyTrustedVerdictsAreRemembered() throws {
        var state = VerdictCache.State()
        let key = VerdictCache.Key(policy: "p", repository: "r", digest: signed)
        state.remember(Verdict(digest: signed), for: key)
        #expect(state.verdict(for: key) == nil)
        let signature = try CosignSignature.sign(digest: signed, reference: "r", key: self.key)
        var trusted = Verdict(digest: signed)
        trusted.accepted = [
            .init(
                layout: .legacy,
                signature: try CosignVerifier(policy: .key([self.key.publicKey])).verify(signature, digest: signed))
        ]
        state.remember(trusted, for: key)
        #expect(state.verdict(for: key)?.isTrusted == true)
        #expect(state.verdict(for: VerdictCache.Key(policy: "q", repository: "r", digest: signed)) == nil)
    }

    @Test func fingerprintsSeparatePolicies() throws {
        let other = try PrivateKey.generateP256()
        #expect(TrustPolicy.keys([key.publicKey]).fingerprint == TrustPolicy.keys([key.publicKey]).fingerprint)
        #expect(TrustPolicy.keys([key.publicKey]).fingerprint != TrustPolicy.keys([other.publicKey]).fingerprint)
        #expect(
            TrustPolicy.keys([key.publicKey]).fingerprint
                != TrustPolicy.keys([key.publicKey], requiredAnnotations: ["a": "b"]).fingerprint)
        let root = try TrustedRoot.publicGood()
        var shorter = root
        shorter.timestampAuthorities = []
        #expect(root.fingerprint != shorter.fingerprint)
        #expect(
            TrustPolicy.keyless(identity: .exact("x"), issuer: nil, trustedRoot: root).fingerprint
                != TrustPolicy.keyless(identity: .exact("x"), issuer: nil, trustedRoot: shorter).fingerprint)
    }
}
