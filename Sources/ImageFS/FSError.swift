/// Why a filesystem operation failed. The FUSE bridge maps each case to one errno and logs the cause.
public enum FSError: Error, Equatable, CustomStringConvertible {
    case notFound
    case notDirectory
    case isDirectory
    case exists
    case readOnly
    case notEmpty
    case permissionDenied
    case invalidArgument
    case badHandle
    /// The rename would have to move a directory that also exists in the image: the caller copies instead.
    case crossDevice
    /// The file is larger than the daemon copies for a writer (`SparseCopy.dataLimit`).
    case tooLarge
    /// The content could not be obtained or failed verification; `reason` says which, for the log.
    case unavailable(reason: String)

    public var description: String {
        switch self {
        case .notFound: return "no such file or directory"
        case .notDirectory: return "not a directory"
        case .isDirectory: return "is a directory"
        case .exists: return "file exists"
        case .readOnly: return "read-only file system"
        case .notEmpty: return "directory not empty"
        case .permissionDenied: return "permission denied"
        case .invalidArgument: return "invalid argument"
        case .badHandle: return "bad file handle"
        case .crossDevice: return "cannot rename a directory that is part of the image"
        case .tooLarge: return "file too large to copy for writing: replace it whole (O_TRUNC) instead"
        case .unavailable(let reason): return "content unavailable: \(reason)"
        }
    }
}
