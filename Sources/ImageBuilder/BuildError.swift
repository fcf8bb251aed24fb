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
    case unsupported(String)
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
        case .unsupported(let why): return why
        case .io(let op, let p, let e): return "\(op) \(p) failed: \(String(cString: strerror(e)))"
        }
    }
}

#if canImport(Glibc)
    import Glibc
#endif
