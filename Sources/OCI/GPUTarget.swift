/// A compilation target as Triton names it (`GPUTarget(backend, arch, warp_size)`): `cuda:90:32`, `hip:gfx942:64`;
/// and, for caches of CPU code (vLLM on CPU, whose Inductor kernels are C++), `cpu:<vector ISA>` as Inductor names
/// the ISA it compiled for (`cpu:avx512`, `cpu:avx2`, `cpu:asimd`), never matching a GPU (docs/vllm.md).
///
/// The arch is kept as text, since MCV writes it as a string in its labels (`"90"`, `"gfx90a"`) and Triton as an
/// integer for CUDA; comparing text is the rule MCV uses.
public struct GPUTarget: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Backend: String, Sendable, Hashable, Codable {
        case cuda
        case hip
        case cpu
    }

    public var backend: Backend
    public var arch: String
    /// Nil when unknown (a `--gpu cuda:90` without a warp size matches any).
    public var warpSize: Int?

    public init(backend: Backend, arch: String, warpSize: Int? = nil) {
        self.backend = backend
        self.arch = arch
        self.warpSize = warpSize
    }

    public enum ValidationError: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case unknownBackend(String)

        public var description: String {
            switch self {
            case .malformed(let s):
                return
                    "invalid GPU target '\(s)': expected backend:arch[:warp], e.g. cuda:90, hip:gfx942:64 or cpu:avx512"
            case .unknownBackend(let b): return "unknown GPU backend '\(b)': expected cuda, hip, rocm or cpu"
            }
        }
    }

    /// Parses `backend:arch[:warp]`; `rocm` is accepted for `hip`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), !parts[1].isEmpty else { throw ValidationError.malformed(text) }
        guard let backend = Self.backend(named: parts[0]) else { throw ValidationError.unknownBackend(parts[0]) }
        var warp: Int?
        if parts.count == 3 {
            guard let w = Int(parts[2]), w > 0 else { throw ValidationError.malformed(text) }
            warp = w
        }
        self.init(backend: backend, arch: parts[1], warpSize: warp)
    }

    public static func backend(named name: String) -> Backend? {
        switch name.lowercased() {
        case "cuda", "nvidia": return .cuda
        case "hip", "rocm", "amd": return .hip
        case "cpu": return .cpu
        default: return nil
        }
    }

    /// True when both name the same backend and arch, and the warp sizes agree where both are known.
    public func matches(_ other: GPUTarget) -> Bool {
        guard backend == other.backend, arch == other.arch else { return false }
        guard let mine = warpSize, let theirs = other.warpSize else { return true }
        return mine == theirs
    }

    public var description: String {
        warpSize.map { "\(backend.rawValue):\(arch):\($0)" } ?? "\(backend.rawValue):\(arch)"
    }

    private enum CodingKeys: String, CodingKey {
        case backend, arch
        case warpSize = "warp_size"
    }

    /// Decodes the label and kernel-JSON forms alike: arch as string or integer, backend `cuda|hip|rocm`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let name = try container.decode(String.self, forKey: .backend)
        guard let backend = Self.backend(named: name) else {
            throw DecodingError.dataCorruptedError(
                forKey: .backend, in: container, debugDescription: "unknown backend '\(name)'")
        }
        let arch: String
        if let text = try? container.decode(String.self, forKey: .arch) {
            arch = text
        } else {
            arch = String(try container.decode(Int.self, forKey: .arch))
        }
        self.init(backend: backend, arch: arch, warpSize: try container.decodeIfPresent(Int.self, forKey: .warpSize))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(backend.rawValue, forKey: .backend)
        try container.encode(arch, forKey: .arch)
        try container.encodeIfPresent(warpSize, forKey: .warpSize)
    }
}
