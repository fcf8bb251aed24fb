import Foundation

/// A Triton kernel's `<name>.json` (docs/triton-cache.md), the authority on which target a cache entry was compiled for.
///
/// Only the fields mcvfs reads are decoded; the many others (and those later Triton versions add) are ignored.
/// Everything but `hash`, `target` and `name` is optional, since older Triton wrote fewer keys (`triton_version`
/// appears in 3.3) and writes `null` for unset options.
public struct KernelMetadata: Sendable, Equatable, Decodable {
    public var hash: String
    /// The target Triton compiled for, as `get_current_target()` reported it (`{"backend","arch","warp_size"}`).
    public var target: GPUTarget
    public var name: String
    /// Triton's `__version__` at compile time; nil before Triton 3.3.
    public var tritonVersion: String?
    /// The compile option `arch` (`"sm90"`, `"gfx942"`). It differs from `target` when `TRITON_OVERRIDE_ARCH` was set.
    public var optionsArch: String?
    public var numWarps: Int?
    public var numStages: Int?
    public var numCTAs: Int?
    /// Usually nil; not a selection criterion (docs/gpu-targets.md).
    public var ptxVersion: Int?
    public var debug: Bool?

    /// A kernel JSON file that could not be decoded, and where.
    public enum MalformedError: Error, Equatable, CustomStringConvertible {
        /// A key the metadata must have, dotted from the document's root (`target.arch`).
        case missingKey(String)
        /// A value of the wrong type, or bytes that are not JSON: where (a dotted key path, "" for the document
        /// itself), in the decoder's words.
        case invalid(at: String, detail: String)

        public var description: String {
            switch self {
            case .missingKey(let key): return "malformed Triton kernel metadata: missing key '\(key)'"
            case .invalid(let at, let detail):
                return "malformed Triton kernel metadata: \(at.isEmpty ? detail : "\(at): \(detail)")"
            }
        }
    }

    /// Decodes a kernel JSON file's bytes. The one parser of `<name>.json`: the mount's GPU filter, the image
    /// builder's scan and `gpus` all read kernels through it.
    /// - Throws: `MalformedError` naming what was missing or wrong.
    public init(json: Data) throws(MalformedError) {
        do {
            self = try JSONDecoder().decode(KernelMetadata.self, from: json)
        } catch let error as DecodingError {
            throw Self.malformed(error)
        } catch {
            throw .invalid(at: "", detail: "\(error)")
        }
    }

    private enum CodingKeys: String, CodingKey {
        case hash, target, name, debug
        case tritonVersion = "triton_version"
        case optionsArch = "arch"
        case numWarps = "num_warps"
        case numStages = "num_stages"
        case numCTAs = "num_ctas"
        case ptxVersion = "ptx_version"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        hash = try container.decode(String.self, forKey: .hash)
        target = try container.decode(GPUTarget.self, forKey: .target)
        name = try container.decode(String.self, forKey: .name)
        tritonVersion = try container.decodeIfPresent(String.self, forKey: .tritonVersion)
        // Older CUDA backends wrote the capability as an integer here.
        if let text = try? container.decodeIfPresent(String.self, forKey: .optionsArch) {
            optionsArch = text
        } else {
            optionsArch = (try? container.decodeIfPresent(Int.self, forKey: .optionsArch)).flatMap {
                $0.map(String.init)
            }
        }
        numWarps = try container.decodeIfPresent(Int.self, forKey: .numWarps)
        numStages = try container.decodeIfPresent(Int.self, forKey: .numStages)
        numCTAs = try container.decodeIfPresent(Int.self, forKey: .numCTAs)
        ptxVersion = try container.decodeIfPresent(Int.self, forKey: .ptxVersion)
        debug = try container.decodeIfPresent(Bool.self, forKey: .debug)
    }

    private static func malformed(_ error: DecodingError) -> MalformedError {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map(\.stringValue).joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let at = path(context)
            return .missingKey(at.isEmpty ? key.stringValue : at + "." + key.stringValue)
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return .invalid(at: path(context), detail: context.debugDescription)
        @unknown default:
            return .invalid(at: "", detail: "\(error)")
        }
    }
}
