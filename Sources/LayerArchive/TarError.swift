import BlobCache
import Foundation

/// Everything indexing a layer can fail with. When any of these is thrown, no index is persisted.
public enum TarError: Error, Equatable, CustomStringConvertible {
    /// An entry that could escape or subvert the mount; the whole layer is refused (see `EntryPolicy`).
    case hostileEntry(path: String, reason: String)
    /// The archive is damaged: truncated, inconsistent sizes, unreadable headers.
    case corrupt(path: String?, reason: String)
    /// libarchive reported a failure (`archive_error_string`, `archive_errno`).
    case archive(operation: String, message: String, errno: Int32)
    /// A configured limit was exceeded (entry size, total size, entry count): a decompression bomb or worse.
    case limitExceeded(path: String?, reason: String)
    /// The layer's media type is not a tar stream.
    case unsupportedMediaType(String)
    /// Storing a file's bytes or the index failed.
    case store(CacheError)

    public var description: String {
        switch self {
        case .hostileEntry(let path, let reason): return "refusing layer: hostile entry '\(path)': \(reason)"
        case .corrupt(let path, let reason):
            return path.map { "corrupt layer at entry '\($0)': \(reason)" } ?? "corrupt layer: \(reason)"
        case .archive(let operation, let message, let code):
            return "libarchive \(operation) failed: \(message)" + (code != 0 ? " (errno \(code))" : "")
        case .limitExceeded(let path, let reason):
            return path.map { "layer entry '\($0)' exceeds a limit: \(reason)" } ?? "layer exceeds a limit: \(reason)"
        case .unsupportedMediaType(let type): return "layer media type '\(type)' is not a tar stream"
        case .store(let error): return error.description
        }
    }
}
