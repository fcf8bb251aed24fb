/// Everything the GPU module can report: detection problems, bad overrides, bad `--gpu` values, bad kernel JSON.
///
/// Hardware problems (an NVML call failing, an unreadable sysfs file) are not thrown by detection: they travel in
/// `GPUDetector.Detection.problems` so the caller logs them once and still uses whatever else was found.
public enum GPUError: Error, Equatable, CustomStringConvertible {
    /// `--gpu auto` (the default) on a host where detection found no GPU; `problems` says why, where known.
    case noGPUFound(problems: [GPUError])
    /// `libnvidia-ml.so.1` exists but could not be loaded (not the same as absent, which means "no NVIDIA GPU").
    case nvmlLoadFailed(library: String, reason: String)
    /// The loaded NVML lacks a function mcvfs needs (a driver older than the `_v2` entry points).
    case nvmlSymbolMissing(library: String, symbol: String)
    /// An NVML call returned something other than `NVML_SUCCESS`.
    case nvmlCallFailed(function: String, code: Int32, message: String)
    /// A KFD topology file or directory exists but cannot be read.
    case unreadableTopology(path: String, reason: String)
    /// A KFD node reports a `gfx_target_version` whose minor or stepping does not fit one hex digit.
    case unnamableGFXVersion(node: String, version: UInt64)
    /// An environment override (`TRITON_OVERRIDE_ARCH`, `HSA_OVERRIDE_GFX_VERSION`, `MCVFS_GPU`) is malformed.
    case invalidOverride(variable: String, value: String, expected: String)
    /// A `--gpu` value is malformed or the values contradict each other.
    case invalidSelection(value: String, reason: String)

    public var description: String {
        switch self {
        case .noGPUFound(let problems):
            var text =
                "no GPU found on this host; name the targets to mount with --gpu, e.g. --gpu cuda:90 (H100/H200), "
                + "--gpu cuda:80 (A100), --gpu hip:gfx942 (MI300X), or --gpu all for every image"
            if !problems.isEmpty {
                text += " (detection problems: " + problems.map(\.description).joined(separator: "; ") + ")"
            }
            return text
        case .nvmlLoadFailed(let library, let reason):
            return "cannot load NVML (\(library)): \(reason)"
        case .nvmlSymbolMissing(let library, let symbol):
            return "NVML (\(library)) has no \(symbol); the NVIDIA driver is too old"
        case .nvmlCallFailed(let function, let code, let message):
            return "\(function) failed: \(message) (nvmlReturn_t \(code))"
        case .unreadableTopology(let path, let reason):
            return "cannot read KFD topology \(path): \(reason)"
        case .unnamableGFXVersion(let node, let version):
            return "KFD node \(node) reports gfx_target_version \(version), which has no gfx name"
        case .invalidOverride(let variable, let value, let expected):
            return "invalid \(variable)='\(value)': expected \(expected)"
        case .invalidSelection(let value, let reason):
            return "invalid --gpu '\(value)': \(reason)"
        }
    }
}
