import Foundation
import Synchronization

/// Error replies by FUSE operation and errno, fed by `FUSESession`'s error hook (so the bridge needs no metrics
/// dependency). Lookups of absent names (ENOENT) are normal for Triton (`os.path.exists`), so they are counted
/// but carry their errno as a label for dashboards to filter.
public final class FUSEErrorCounter: Sendable {
    public struct Key: Hashable, Sendable {
        public var operation: String
        public var errno: Int32

        public init(operation: String, errno: Int32) {
            self.operation = operation
            self.errno = errno
        }
    }

    private let counts = Mutex<[Key: Int]>([:])

    public init() {}

    public var record: @Sendable (String, Int32) -> Void {
        { [self] operation, code in counts.withLock { $0[Key(operation: operation, errno: code), default: 0] += 1 } }
    }

    public var snapshot: [Key: Int] { counts.withLock { $0 } }

    /// `operation/ERRNAME` → count, for the status document.
    public var summary: [String: Int] {
        Dictionary(
            snapshot.map { ("\($0.key.operation)/\(Self.name(of: $0.key.errno))", $0.value) }, uniquingKeysWith: +)
    }

    public static func name(of code: Int32) -> String {
        switch code {
        case ENOENT: return "ENOENT"
        case EIO: return "EIO"
        case EACCES: return "EACCES"
        case EPERM: return "EPERM"
        case EEXIST: return "EEXIST"
        case ENOTEMPTY: return "ENOTEMPTY"
        case EROFS: return "EROFS"
        case ENOTDIR: return "ENOTDIR"
        case EISDIR: return "EISDIR"
        case EINVAL: return "EINVAL"
        case ENOSYS: return "ENOSYS"
        case ENODATA: return "ENODATA"
        case ENOSPC: return "ENOSPC"
        default: return "errno\(code)"
        }
    }
}
