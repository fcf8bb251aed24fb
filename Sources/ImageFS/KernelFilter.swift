import Foundation
import OCI

/// Which kernels a mount shows: a kernel directory whose `<name>.json` names a target the host cannot run is
/// hidden, so the mount never downloads or serves what cannot be used.
public struct KernelFilter: Sendable {
    public let acceptsTarget: @Sendable (GPUTarget) -> Bool
    public let acceptsBackend: @Sendable (GPUTarget.Backend) -> Bool

    public init(
        acceptsTarget: @escaping @Sendable (GPUTarget) -> Bool,
        acceptsBackend: @escaping @Sendable (GPUTarget.Backend) -> Bool
    ) {
        self.acceptsTarget = acceptsTarget
        self.acceptsBackend = acceptsBackend
    }

    /// Accepts every kernel (`--gpu all`).
    public static let all = KernelFilter(acceptsTarget: { _ in true }, acceptsBackend: { _ in true })

    /// Accepts kernels for any of `targets`.
    public static func targets(_ targets: [GPUTarget]) -> KernelFilter {
        KernelFilter(
            acceptsTarget: { candidate in targets.contains { $0.matches(candidate) } },
            acceptsBackend: { backend in targets.contains { $0.backend == backend } })
    }

    /// The backend a driver helper is built for, judged by its file name; nil when the name does not say.
    static func backend(ofHelper name: String) -> GPUTarget.Backend? {
        if name.hasPrefix("cuda_") { return .cuda }
        if name.hasPrefix("hip_") { return .hip }
        return nil
    }
}
