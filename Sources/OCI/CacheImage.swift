/// One cache image as a mount uses it: pinned by digest, with what its labels say it targets.
public struct CacheImage: Sendable, Hashable, Codable {
    /// How the user knows the image: its tag, or the digest when pinned by digest.
    public var name: String
    /// Digest of the image manifest (pinned at mount for the mount's life).
    public var digest: Digest
    public var layers: [Descriptor]
    public var labels: [String: String]

    public init(name: String, digest: Digest, layers: [Descriptor], labels: [String: String]) {
        self.name = name
        self.digest = digest
        self.layers = layers
        self.labels = labels
    }

    public var cacheLabels: CacheLabels { CacheLabels(labels) }

    /// Targets from the summary label; nil when absent (the kernels themselves then decide).
    public var targets: [GPUTarget]? { cacheLabels.targets }

    public var size: Int64 { layers.reduce(0) { $0 + $1.size } }
}
