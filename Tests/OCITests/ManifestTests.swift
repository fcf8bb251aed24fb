import Foundation
import OCI
import Testing

/// Manifest documents as registries serve them: told apart by media type, header or shape, and refused with the
/// reason when they are not what they claim.
@Suite struct ManifestTests {
    static let digest = "sha256:" + String(repeating: "ab", count: 32)
    static let manifest = #"""
        {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
         "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(digest)","size":7},
         "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\#(digest)","size":70,
                    "annotations":{"containerd.io/snapshot/stargz/toc.digest":"\#(digest)"}}]}
        """#

    @Test func anOCIManifestParsesWithItsLayersAndAnnotations() throws {
        guard case .manifest(let parsed) = try ManifestDocument(parsing: Data(Self.manifest.utf8)) else {
            Issue.record("not read as a manifest")
            return
        }
        #expect(parsed.config.size == 7)
        #expect(parsed.layers.map(\.mediaType) == [MediaType.ociLayerGzip])
        #expect(parsed.layers[0].annotations?["containerd.io/snapshot/stargz/toc.digest"] == Self.digest)
    }

    @Test func theKindComesFromTheHeaderOrTheShapeWhenTheDocumentDoesNotSay() throws {
        let bare = #"{"schemaVersion":2,"manifests":[]}"#
        guard case .index(let index) = try ManifestDocument(parsing: Data(bare.utf8)) else {
            Issue.record("an object with manifests is an index")
            return
        }
        #expect(index.manifests.isEmpty)
        let docker = Self.manifest.replacingOccurrences(
            of: #""mediaType":"application/vnd.oci.image.manifest.v1+json","#, with: "")
        let parsed = try ManifestDocument(parsing: Data(docker.utf8), contentType: MediaType.dockerManifest + "; q=1")
        guard case .manifest = parsed else {
            Issue.record("the Content-Type names a manifest")
            return
        }
    }

    @Test(arguments: [
        ("[]", "manifest is not a JSON object: top level is not an object"),
        ("{", "manifest is not a JSON object"),
        (#"{"schemaVersion":1,"config":{}}"#, "schemaVersion 1 (only 2 is supported)"),
        (#"{"schemaVersion":2}"#, "neither 'config' nor 'manifests' present"),
        (#"{"schemaVersion":2,"mediaType":"text/plain","config":{}}"#, "unsupported manifest media type 'text/plain'"),
        (
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#,
            "missing field 'config'"
        ),
    ])
    func malformedDocumentsAreRefusedWithTheReason(_ text: String, _ reason: String) {
        #expect {
            try ManifestDocument(parsing: Data(text.utf8))
        } throws: { error in
            String(describing: error).contains(reason)
        }
    }

    @Test func configsYieldTheirLabels() throws {
        let config = try ImageConfig(
            parsing: Data(#"{"architecture":"amd64","config":{"Labels":{"model.cache.image/type":"triton"}}}"#.utf8))
        #expect(config.labels == ["model.cache.image/type": "triton"])
        #expect(try ImageConfig(parsing: Data(#"{"os":"linux"}"#.utf8)).labels.isEmpty)
        #expect(throws: ManifestDocument.ParseError.self) { try ImageConfig(parsing: Data(#"{"config":[]}"#.utf8)) }
    }
}
