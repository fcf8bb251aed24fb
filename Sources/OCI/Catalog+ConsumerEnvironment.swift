extension Catalog {
    /// What a consumer that sees the mount at `root` sets to find every used image's caches (`TRITON_CACHE_DIR`,
    /// `VLLM_CACHE_ROOT`, the variables of KServe's extra trees), in merge order; when two images point one variable
    /// at different trees, the first image's wins, as it wins the files.
    public func consumerEnvironment(root: String) -> [(name: String, value: String)] {
        var environment: [(name: String, value: String)] = []
        for image in used {
            for variable in image.cacheLabels.consumerEnvironment(root: root)
            where !environment.contains(where: { $0.name == variable.name }) {
                environment.append(variable)
            }
        }
        return environment
    }
}
