import ContentHash
import Foundation
import OCI
import TestSupport
import Testing

@testable import Registry

@Suite struct ReferrersTests {
    let subject = try! Digest(parsing: "sha256:" + String(repeating: "cd", count: 32))
    let bundleType = "application/vnd.dev.sigstore.bundle.v0.3+json"

    func client(_ transport: InMemoryRegistry) throws -> RegistryClient {
        try RegistryClient(registry: "registry.example", transport: transport)
    }

    func index(_ entries: [(Digest, String)]) -> String {
        let manifests = entries.map {
            #"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#($0.0)","size":10,"#
                + #""artifactType":"\#($0.1)"}"#
        }
        return #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":["#
            + manifests.joined(separator: ",") + "]}"
    }

    @Test func referrersAPIIsAskedAndFilteredByArtifactType() throws {
        let bundle = SHA256Hasher.digest(Data("bundle".utf8))
        let sbom = SHA256Hasher.digest(Data("sbom".utf8))
        // This registry ignores the filter: the client filters again.
        let body = index([(bundle, bundleType), (sbom, "application/spdx+json")])
        let transport = InMemoryRegistry { request, _ in
            #expect(request.url.path == "/v2/org/cache/referrers/\(subject)")
            #expect(request.url.query == "artifactType=application/vnd.dev.sigstore.bundle.v0.3+json")
            return .init(200, headers: ["Content-Type": MediaType.ociIndex], json: body)
        }
        let found = try client(transport).referrers(repository: "org/cache", digest: subject, artifactType: bundleType)
        #expect(found.map(\.digest) == [bundle])
        #expect(found.first?.artifactType == bundleType)
    }

    /// A registry without the referrers API answers 404: the index at the fallback tag `sha256-<hex>` is read.
    @Test func fallbackTagWhenTheAPIIsMissing() throws {
        let bundle = SHA256Hasher.digest(Data("bundle".utf8))
        let body = Data(index([(bundle, bundleType)]).utf8)
        let transport = InMemoryRegistry { request, _ in
            if request.url.path.contains("/referrers/") { return .init(404, json: #"{"errors":[]}"#) }
            #expect(request.url.path == "/v2/org/cache/manifests/sha256-\(subject.hex)")
            return .init(200, headers: ["Content-Type": MediaType.ociIndex], body: body)
        }
        let found = try client(transport).referrers(repository: "org/cache", digest: subject)
        #expect(found.map(\.digest) == [bundle])
    }

    @Test func noReferrersAtAll() throws {
        let transport = InMemoryRegistry { _, _ in .init(404, json: #"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#) }
        #expect(try client(transport).referrers(repository: "org/cache", digest: subject).isEmpty)
    }

    @Test func fallbackTagHoldingAnImageIsAnError() throws {
        let manifest = Data(
            (#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#
                + #""config":{"mediaType":"a","digest":"\#(subject)","size":1},"layers":[]}"#).utf8)
        let transport = InMemoryRegistry { request, _ in
            if request.url.path.contains("/referrers/") { return .init(404) }
            return .init(200, headers: ["Content-Type": MediaType.ociManifest], body: manifest)
        }
        #expect(throws: RegistryError.self) {
            try client(transport).referrers(repository: "org/cache", digest: subject)
        }
    }
}
