import Foundation
import OCI

/// Finds the compilation targets of this host's GPUs, named as Triton names them (docs/gpu-targets.md).
///
/// Every input is injectable so tests never depend on the machine: the environment, the KFD topology root and the
/// NVML library name. Detection never crashes and never throws for hardware trouble; see `detect()`.
public struct GPUDetector: Sendable {
    /// The conventional KFD topology directory.
    public static let defaultKFDTopologyRoot = KFDTopology.defaultRoot
    /// The NVML soname the NVIDIA driver installs (the unversioned `.so` is a toolkit stub and is not used).
    public static let defaultNVMLLibrary = "libnvidia-ml.so.1"

    /// Replaces detection entirely; the same syntax as `--gpu`, comma separated (`cuda:90,hip:gfx942`).
    public static let selectionVariable = "MCVFS_GPU"
    /// Triton's own arch override (`triton/knobs.py`, `runtime.override_arch`).
    public static let tritonOverrideVariable = "TRITON_OVERRIDE_ARCH"
    /// ROCr's override of the reported gfx version (`9.4.2` -> gfx942), applied to every AMD GPU.
    public static let hsaOverrideVariable = "HSA_OVERRIDE_GFX_VERSION"

    /// What one detection found.
    public struct Detection: Sendable, Equatable {
        public enum Source: Sendable, Equatable {
            /// NVML and the KFD topology.
            case hardware
            /// `MCVFS_GPU`, with its value.
            case environment(String)
        }

        /// Distinct targets in a stable order: NVIDIA devices by NVML index, then AMD nodes by node number.
        public var targets: [GPUTarget]
        /// Non-fatal trouble to log once (an NVML call that failed, an unreadable node); other GPUs still count.
        public var problems: [GPUError]
        public var source: Source

        public init(targets: [GPUTarget], problems: [GPUError] = [], source: Source = .hardware) {
            self.targets = targets
            self.problems = problems
            self.source = source
        }
    }

    public var environment: [String: String]
    public var kfdTopologyRoot: String
    public var nvmlLibrary: String

    /// - Parameters:
    ///   - environment: where `MCVFS_GPU`, `TRITON_OVERRIDE_ARCH` and `HSA_OVERRIDE_GFX_VERSION` are read.
    ///   - kfdTopologyRoot: the directory holding one directory per KFD node, each with a `properties` file.
    ///   - nvmlLibrary: the name or path handed to `dlopen`.
    public init(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        kfdTopologyRoot: String = GPUDetector.defaultKFDTopologyRoot,
        nvmlLibrary: String = GPUDetector.defaultNVMLLibrary
    ) {
        self.environment = environment
        self.kfdTopologyRoot = kfdTopologyRoot
        self.nvmlLibrary = nvmlLibrary
    }

    /// The selection `MCVFS_GPU` names, or nil when it is unset or blank.
    /// - Throws: `GPUError.invalidOverride` when it does not parse as `--gpu` values.
    public func environmentSelection() throws(GPUError) -> GPUSelection? {
        guard let value = environment[Self.selectionVariable],
            !value.trimmingCharacters(in: .whitespaces).isEmpty
        else { return nil }
        do {
            return try GPUSelection(parsing: [value])
        } catch {
            throw .invalidOverride(
                variable: Self.selectionVariable, value: value,
                expected: "auto, all, or comma-separated backend:arch[:warp] such as cuda:90,hip:gfx942:64")
        }
    }

    /// Detects the host's targets, or takes them from `MCVFS_GPU` when that names targets.
    ///
    /// - Returns: the distinct targets, with any non-fatal problems. No GPU is an empty list, not an error; an absent
    ///   NVML library means no NVIDIA GPU.
    /// - Throws: `GPUError.invalidOverride` when `MCVFS_GPU`, `TRITON_OVERRIDE_ARCH` or `HSA_OVERRIDE_GFX_VERSION`
    ///   is malformed, or when `MCVFS_GPU` is `all` (which names no GPU; `GPUSelection.resolve` handles it).
    public func detect() throws(GPUError) -> Detection {
        switch try environmentSelection() {
        case .targets(let targets)?:
            return Detection(
                targets: Self.distinct(targets), source: .environment(environment[Self.selectionVariable] ?? ""))
        case .all?:
            throw .invalidOverride(
                variable: Self.selectionVariable, value: environment[Self.selectionVariable] ?? "",
                expected: "GPU targets when asking what the host has; 'all' only means something to a selection")
        case .auto?, nil:
            return try detectHardware()
        }
    }

    private func detectHardware() throws(GPUError) -> Detection {
        let tritonOverride = try TritonArchOverride(environment[Self.tritonOverrideVariable])
        let hsaOverride = try Self.hsaGFXVersion(environment[Self.hsaOverrideVariable])

        var targets: [GPUTarget] = []
        var problems: [GPUError] = []

        let nvidia = NVML.enumerate(library: nvmlLibrary)
        problems += nvidia.problems
        for capability in nvidia.capabilities {
            // Triton's CUDA driver: GPUTarget("cuda", major * 10 + minor, 32). TRITON_OVERRIDE_ARCH changes only the
            // compile option `arch` (`sm80`), not the target recorded in kernel JSON and image labels, so it does not
            // change what is selected here.
            targets.append(
                GPUTarget(backend: .cuda, arch: String(capability.major * 10 + capability.minor), warpSize: 32))
        }

        let amd = KFDTopology.gpuNodes(root: kfdTopologyRoot)
        problems += amd.problems
        for node in amd.nodes {
            // ROCr substitutes HSA_OVERRIDE_GFX_VERSION for every GPU's version; Triton's HIP driver then lets
            // TRITON_OVERRIDE_ARCH replace the name (dropping target features after ':'). The wave size stays.
            let version = hsaOverride ?? node.gfxTargetVersion
            guard let reported = KFDTopology.gfxName(version: version) else {
                problems.append(.unnamableGFXVersion(node: node.node, version: version))
                continue
            }
            let arch = tritonOverride.hipArch ?? reported
            let wave = node.waveFrontSize ?? KFDTopology.defaultWaveFrontSize(version: version)
            targets.append(GPUTarget(backend: .hip, arch: arch, warpSize: wave))
        }
        return Detection(targets: Self.distinct(targets), problems: problems, source: .hardware)
    }

    /// Drops repeats (eight identical GPUs are one target), keeping first occurrences in order.
    static func distinct(_ targets: [GPUTarget]) -> [GPUTarget] {
        var seen = Set<GPUTarget>()
        return targets.filter { seen.insert($0).inserted }
    }

    /// `HSA_OVERRIDE_GFX_VERSION=major.minor.stepping` (decimal parts, as ROCr reads it) as a `gfx_target_version`.
    static func hsaGFXVersion(_ value: String?) throws(GPUError) -> UInt64? {
        guard let value, !value.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
        let parts = value.trimmingCharacters(in: .whitespaces).split(separator: ".", omittingEmptySubsequences: false)
        let numbers = parts.compactMap { UInt64($0) }
        guard parts.count == 3, numbers.count == 3, numbers[1] < 100, numbers[2] < 100 else {
            throw .invalidOverride(
                variable: hsaOverrideVariable, value: value, expected: "major.minor.stepping, e.g. 9.4.2 or 10.3.0")
        }
        let version = numbers[0] * 10000 + numbers[1] * 100 + numbers[2]
        guard KFDTopology.gfxName(version: version) != nil else {
            throw .invalidOverride(
                variable: hsaOverrideVariable, value: value,
                expected: "a gfx version whose minor and stepping are below 16, e.g. 9.4.2 or 9.0.10")
        }
        return version
    }
}

/// `TRITON_OVERRIDE_ARCH`, as Triton 3.9 reads it.
///
/// CUDA (`backends/nvidia/compiler.py`) requires `^sm(\d+)$` and uses it only as the compile option `arch`; the
/// target stays the device's capability. HIP (`backends/amd/driver.py`) makes it the target's arch, cut at ':'.
struct TritonArchOverride: Equatable {
    /// The arch HIP targets take, when the override names a gfx processor.
    var hipArch: String?
    /// The capability a CUDA compile uses (`sm80` -> 80), when the override names one.
    var cudaCapability: Int?

    init(_ value: String?) throws(GPUError) {
        guard let value, !value.isEmpty else { return }
        let digits = value.dropFirst(2)
        if value.hasPrefix("sm"), !digits.isEmpty, digits.allSatisfy({ ("0"..."9").contains($0) }),
            let capability = Int(digits)
        {
            cudaCapability = capability
        } else if value.hasPrefix("gfx"), let name = value.split(separator: ":").first, name.count > 3 {
            hipArch = String(name)
        } else {
            throw .invalidOverride(
                variable: GPUDetector.tritonOverrideVariable, value: value,
                expected: "sm<capability> for CUDA (e.g. sm90) or gfx<processor> for ROCm (e.g. gfx942)")
        }
    }
}
