import ArgumentParser
import GPU
import ImageFS
import OCI

/// `--gpu auto|all|backend:arch[:warp]`, repeatable.
struct GPUOptions: ParsableArguments {
    @Option(
        name: .customLong("gpu"),
        help:
            "GPU targets to use: auto (detect; $MCVFS_GPU overrides), all, or backend:arch[:warp] such as cuda:90 or hip:gfx942 (cpu:avx512 for vLLM caches built on CPUs). Repeatable."
    )
    var specs: [String] = []

    func resolve() throws -> ResolvedSelection {
        let selection = try GPUSelection(parsing: specs.isEmpty ? ["auto"] : specs)
        let resolved = try selection.resolve(detector: GPUDetector())
        for problem in resolved.problems { Log.warning("GPU detection: \(problem)") }
        return resolved
    }
}

extension GPUOptions {
    /// Like `resolve`, except that a host without GPUs is not an error: listing is how one finds out what
    /// would be compatible elsewhere, so every image is then shown as not compatible here.
    func resolveForListing() throws -> ResolvedSelection {
        do {
            return try resolve()
        } catch GPUError.noGPUFound {
            Log.warning("no GPU found on this host: every image shows as not compatible; pass --gpu to choose")
            return ResolvedSelection(scope: .targets([]))
        }
    }
}
