/// A content descriptor: what a manifest says about one blob.
/// See the OCI image spec, descriptor.md.
public struct Descriptor: Sendable, Hashable, Codable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var annotations: [String: String]?
    public var platform: Platform?
    public var urls: [String]?
    /// The artifact's type, on descriptors a referrers list returns (OCI image spec 1.1).
    public var artifactType: String?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
    }

    public struct Platform: Sendable, Hashable, Codable {
        public var architecture: String
        public var os: String
        public var variant: String?
    }
}
