/// The media types mcvfs reads, from the OCI image spec and Docker's image manifest v2 schema 2.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayerTar = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let cosignSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
    /// MCV's legacy "oci variant" cache layers, a tar.gz under its own type (MCV still extracts them; it stopped
    /// writing them). An early MCV wrote the Triton one with a `vnd.` prefix.
    public static let legacyTritonLayer = "application/cache.triton.content.layer.v1+triton"
    public static let legacyVLLMLayer = "application/cache.vllm.content.layer.v1+vllm"
    static let legacyCacheLayers: Set<String> = [
        legacyTritonLayer, legacyVLLMLayer, "application/vnd.cache.triton.content.layer.v1+triton",
    ]

    /// The `Accept` list for manifest requests: every manifest kind mcvfs can read.
    public static let manifestAccept = [ociManifest, ociIndex, dockerManifest, dockerManifestList]

    public static func isIndex(_ type: String) -> Bool { type == ociIndex || type == dockerManifestList }
    public static func isManifest(_ type: String) -> Bool { type == ociManifest || type == dockerManifest }

    /// Layer media types whose bytes are a tar stream, plain or compressed (including the
    /// non-distributable variants, which only differ in where a registry may store them, and MCV's legacy cache
    /// layers).
    public static func isTarLayer(_ type: String) -> Bool {
        type == dockerLayerGzip || type.hasPrefix("application/vnd.oci.image.layer.v1.tar")
            || type.hasPrefix("application/vnd.oci.image.layer.nondistributable.v1.tar")
            || type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" || legacyCacheLayers.contains(type)
    }
}
