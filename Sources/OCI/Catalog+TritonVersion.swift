extension Catalog {
    /// Skips the used images whose kernels another Triton version compiled (their `model.cache.image/triton-version`
    /// label names only others): a Triton cache key includes Triton's version, so the node would download kernels
    /// its Triton can never look up. Images that do not say stay used; their kernels may still be of this version.
    public mutating func keepOnly(tritonVersion version: String) {
        for i in entries.indices where entries[i].isUsed {
            guard let versions = entries[i].image?.cacheLabels.tritonVersions, !versions.contains(version) else {
                continue
            }
            entries[i].skipReason =
                "compiled by Triton \(versions.sorted().joined(separator: ", ")), not \(version) (--triton-version)"
        }
    }
}
