import ArgumentParser
import GPU
import ImageFS
import OCI

/// `--gpu auto|all|backend:arch[:warp]`, repeatable.
struct GPUOptions: ParsableArguments {
    @Option(
        name: .customLong("gpu"),
        help: "GPU targets to use: auto (detect; $MCVFS_GPU overrides), all, or backend:arch[:warp] such as cuda:90 or hip:gfx942. Repeatable."
    )
    var specs: [String] = []

    func resolve() throws -> ResolvedSelection {
        let selection = try GPUSelection(parsing: specs.isEmpty ? ["auto"] : specs)
        let resolved = try selection.resolve(detector: GPUDetector())
        for problem in resolved.problems { Log.warning("GPU detection: \(problem)") }
        return resolved
    }
}

extension ResolvedSelection {
    var kernelFilter: KernelFilter {
        switch scope {
        case .all: return .all
        case .targets(let targets): return .targets(targets)
        }
    }
}
