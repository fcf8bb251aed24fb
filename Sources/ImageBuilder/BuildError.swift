/// Why an image could not be built from a directory.
public enum BuildError: Error, Equatable, CustomStringConvertible {
    case notADirectory(String)
    case emptyDirectory(String)
    /// The directory holds no Triton cache entry and no vLLM `torch_compile_cache/`.
    case notACache(path: String, reason: String)
    case unreadable(path: String, errno: Int32)
    /// A symlink whose target lies outside the cache directory (or dangles): packing it would publish a path into
    /// the builder's machine, or nothing.
    case escapingSymlink(path: String, target: String)
    case invalidName(String)
    /// An OCI layout's `index.json` that does not decode (`reason`: the decoder's error).
    case notAnOCIIndex(path: String, reason: String)
    /// `--split per-target` of a vLLM cache, which serves one GPU model.
    case splitOfVLLMCache
    /// `--split per-target` of a cache none of whose kernels names its target.
    case splitWithoutTargets
    case io(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .notADirectory(let p): return "\(p) is not a directory"
        case .emptyDirectory(let p): return "\(p) is empty: nothing to push"
        case .notACache(let p, let why):
            return "\(p) is not a Triton or vLLM cache: \(why)"
        case .unreadable(let p, let e): return "cannot read \(p): \(String(cString: strerror(e)))"
        case .escapingSymlink(let p, let t):
            return "refusing symlink \(p) -> \(t): it points outside the cache directory"
        case .invalidName(let n): return "refusing file name \(n.debugDescription): not valid UTF-8 or not a plain name"
        case .notAnOCIIndex(let path, let reason): return "\(path) exists but is not an OCI index: \(reason)"
        case .splitOfVLLMCache:
            return "--split per-target applies to Triton caches; a vLLM cache serves one GPU model"
        case .splitWithoutTargets: return "--split per-target: no kernel in the cache names its target"
        case .io(let op, let p, let e): return "\(op) \(p) failed: \(String(cString: strerror(e)))"
        }
    }
}

#if canImport(Glibc)
    import Glibc
#endif
