import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why a tree could not be written out into a directory (`mcvfs extract`, `mcvfs export`).
public enum ExportError: Error, Equatable, CustomStringConvertible {
    case invalidName(String)
    /// The content `digest` of `path` could not be had from the image's layers (`reason`: the source's error).
    case contentUnavailable(digest: String, path: String, reason: String)
    case io(operation: String, path: String, errno: Int32)
    /// Extracted content did not hash to its digest.
    case digestMismatch(path: String, expected: String, actual: String)

    public var description: String {
        switch self {
        case .invalidName(let n): return "refusing file name \(n.debugDescription): not valid UTF-8 or not a plain name"
        case .contentUnavailable(let digest, let path, let reason):
            return "content \(digest) of \(path) is not available: \(reason)"
        case .io(let op, let p, let e): return "\(op) \(p) failed: \(String(cString: strerror(e)))"
        case .digestMismatch(let p, let expected, let actual):
            return "content of \(p) hashes to \(actual), expected \(expected)"
        }
    }
}
