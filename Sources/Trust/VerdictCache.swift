import OCI
import Synchronization

/// Verdicts already reached in this process, so verifying a digest again (a catalog refresh, a remount in the same
/// daemon) neither re-downloads nor re-checks its signatures. Only trusted verdicts are kept: a digest is
/// immutable and so are its verified signatures, while a refused image may be signed later.
///
/// Keyed by policy fingerprint, repository and digest. The lock is a leaf: held for a dictionary access only,
/// never across registry I/O or verification.
public final class VerdictCache: Sendable {
    struct Key: Hashable {
        var policy: String
        var repository: String
        var digest: Digest
    }

    struct State {
        var verdicts: [Key: Verdict] = [:]

        func verdict(for key: Key) -> Verdict? { verdicts[key] }

        mutating func remember(_ verdict: Verdict, for key: Key) {
            guard verdict.isTrusted else { return }
            verdicts[key] = verdict
        }
    }

    /// The process's cache.
    public static let shared = VerdictCache()

    private let state = Mutex(State())

    public init() {}

    func verdict(for key: Key) -> Verdict? { state.withLock { $0.verdict(for: key) } }

    func remember(_ verdict: Verdict, for key: Key) { state.withLock { $0.remember(verdict, for: key) } }
}
