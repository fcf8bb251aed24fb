import Foundation
import OCI

/// What `--gpu` asks for (repeatable; each value may also be comma separated, as `MCVFS_GPU` is).
///
/// `auto` (the default) means the host's own GPUs, `all` every image whatever its target, anything else a list of
/// `backend:arch[:warp]` targets (`cuda:90`, `hip:gfx942:64`, `rocm` for `hip`).
public enum GPUSelection: Sendable, Equatable, CustomStringConvertible {
    case auto
    case all
    case targets([GPUTarget])

    /// Parses the `--gpu` values; no values at all is `auto`.
    ///
    /// `all` wins over targets given beside it (it already includes them). `auto` cannot be combined with explicit
    /// targets, since that would silently drop one of the two intentions.
    /// - Parameter values: each `--gpu` value as given; commas separate several in one value.
    /// - Throws: `GPUError.invalidSelection` for an empty or malformed value, or `auto` mixed with targets.
    public init(parsing values: [String]) throws(GPUError) {
        var sawAuto = false
        var sawAll = false
        var targets: [GPUTarget] = []
        for value in values {
            let items = value.split(separator: ",", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
            guard items.contains(where: { !$0.isEmpty }) else {
                throw .invalidSelection(value: value, reason: "empty; use auto, all or backend:arch[:warp]")
            }
            for item in items where !item.isEmpty {
                switch item.lowercased() {
                case "auto": sawAuto = true
                case "all": sawAll = true
                default: targets.append(try Self.target(item))
                }
            }
        }
        if sawAll {
            self = .all
        } else if sawAuto {
            guard targets.isEmpty else {
                throw .invalidSelection(
                    value: values.joined(separator: ","),
                    reason: "auto cannot be combined with explicit targets; list every target instead")
            }
            self = .auto
        } else if targets.isEmpty {
            self = .auto
        } else {
            self = .targets(GPUDetector.distinct(targets))
        }
    }

    /// One `backend:arch[:warp]`, normalised so it compares as Triton writes targets: CUDA `sm90`/`sm_90` -> `90`,
    /// HIP and CPU arch lowercased (`GFX942` -> `gfx942`, `AVX512` -> `avx512`).
    static func target(_ item: String) throws(GPUError) -> GPUTarget {
        var target: GPUTarget
        do {
            target = try GPUTarget(parsing: item)
        } catch let error as GPUTarget.ValidationError {
            throw .invalidSelection(value: item, reason: error.description)
        } catch {
            throw .invalidSelection(value: item, reason: "\(error)")
        }
        switch target.backend {
        case .cuda:
            var arch = Substring(target.arch.lowercased())
            if arch.hasPrefix("sm_") {
                arch = arch.dropFirst(3)
            } else if arch.hasPrefix("sm") {
                arch = arch.dropFirst(2)
            }
            guard !arch.isEmpty, arch.allSatisfy({ ("0"..."9").contains($0) }) else {
                throw .invalidSelection(value: item, reason: "a CUDA arch is a compute capability such as 90 or 80")
            }
            target.arch = String(arch)
        case .hip, .cpu:
            target.arch = target.arch.lowercased()
        }
        return target
    }

    /// Decides what this selection accepts on this host.
    ///
    /// `auto` honours `MCVFS_GPU` first (so `MCVFS_GPU=all` mounts everything), then detects.
    /// - Parameter detector: where the host's targets come from.
    /// - Returns: the selection to filter images with, carrying any detection problems for the caller to log.
    /// - Throws: `GPUError.noGPUFound` when `auto` finds nothing (its description suggests `--gpu cuda:90` and
    ///   friends), or a detector configuration error.
    public func resolve(detector: GPUDetector) throws(GPUError) -> ResolvedSelection {
        switch self {
        case .all:
            return ResolvedSelection(scope: .all)
        case .targets(let targets):
            return ResolvedSelection(scope: .targets(targets))
        case .auto:
            if try detector.environmentSelection() == .all { return ResolvedSelection(scope: .all) }
            let detection = try detector.detect()
            guard !detection.targets.isEmpty else { throw .noGPUFound(problems: detection.problems) }
            return ResolvedSelection(scope: .targets(detection.targets), problems: detection.problems)
        }
    }

    public var description: String {
        switch self {
        case .auto: return "auto"
        case .all: return "all"
        case .targets(let targets): return targets.map(\.description).joined(separator: ",")
        }
    }
}

/// A selection made concrete for one host: which image targets to mount.
public struct ResolvedSelection: Sendable, Equatable, CustomStringConvertible {
    public enum Scope: Sendable, Equatable {
        case all
        case targets([GPUTarget])
    }

    public var scope: Scope
    /// Detection trouble that did not prevent a result (say NVML failing beside a working AMD GPU); log it once.
    public var problems: [GPUError]

    public init(scope: Scope, problems: [GPUError] = []) {
        self.scope = scope
        self.problems = problems
    }

    /// True when `target` (from a kernel JSON or an image label) can be used here: `all` accepts everything;
    /// otherwise some selected target must match it (backend and arch as text, warp size where both know it).
    public func accepts(_ target: GPUTarget) -> Bool {
        switch scope {
        case .all: return true
        case .targets(let selected): return selected.contains { $0.matches(target) }
        }
    }

    /// True when any of an image's targets is accepted. An image with no known targets is accepted only by `all`;
    /// callers that can read the kernels should do so before deciding.
    public func accepts(anyOf targets: [GPUTarget]) -> Bool {
        if case .all = scope { return true }
        return targets.contains { accepts($0) }
    }

    public var description: String {
        switch scope {
        case .all: return "all"
        case .targets(let targets): return targets.map(\.description).joined(separator: ",")
        }
    }
}
