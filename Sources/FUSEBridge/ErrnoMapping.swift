import Glibc
import ImageFS

extension FSError {
    /// The one place an error becomes an errno (STYLE §3).
    var errno: Int32 {
        switch self {
        case .notFound: return ENOENT
        case .notDirectory: return ENOTDIR
        case .isDirectory: return EISDIR
        case .exists: return EEXIST
        case .readOnly: return EROFS
        case .notEmpty: return ENOTEMPTY
        case .permissionDenied: return EACCES
        case .invalidArgument: return EINVAL
        case .badHandle: return EBADF
        case .crossDevice: return EXDEV
        case .tooLarge: return EFBIG
        case .unavailable: return EIO
        }
    }

    /// Errors worth a log line: the expected ones (a lookup of a missing name) are the normal traffic.
    var isNoteworthy: Bool {
        if case .unavailable = self { return true }
        return false
    }
}
