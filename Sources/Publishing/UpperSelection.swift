import ImageFS

/// Whose writes a publish may take. Per-uid uppers exist because one workload's writes must not become another's
/// code, so a caller publishes its own upper; root may name uids (`--from-uid`), and only root may publish a
/// shared upper, which holds everyone's writes. Never every user's upper by default.
public enum UpperSelection {
    /// Why a caller may not publish the uppers it asked for.
    public enum Refused: Error, Equatable, CustomStringConvertible {
        /// A non-root caller asked for a shared upper, which holds every user's writes.
        case sharedUpperNeedsRoot
        /// `--from-uid` was given for a mount with one shared upper.
        case uidsOfASharedUpper
        /// A non-root caller asked for another user's upper.
        case anotherUsersUpper

        public var description: String {
            switch self {
            case .sharedUpperNeedsRoot: return "the mount shares one upper between all users; only root may publish it"
            case .uidsOfASharedUpper: return "the mount has one shared upper: --from-uid does not apply"
            case .anotherUsersUpper: return "only root may publish another user's kernels (--from-uid)"
            }
        }
    }

    /// The upper directories to harvest, in the order given.
    /// - Parameters:
    ///   - root: the mount's upper root (`status.upperRoot`).
    ///   - caller: the uid publishing.
    ///   - uids: the uids asked for (`--from-uid`); empty means the caller's own.
    public static func uppers(
        root: String, isolation: OverlayFileSystem.Isolation, caller: UInt32, uids: [UInt32]
    ) throws(Refused) -> [String] {
        switch isolation {
        case .shared:
            guard caller == 0 else {
                throw .sharedUpperNeedsRoot
            }
            guard uids.isEmpty else {
                throw .uidsOfASharedUpper
            }
            return [root + "/" + OverlayFileSystem.upperName(isolation: .shared, uid: 0)]
        case .perUser:
            let chosen = uids.isEmpty ? [caller] : uids
            guard caller == 0 || chosen == [caller] else {
                throw .anotherUsersUpper
            }
            var seen = Set<UInt32>()
            return chosen.filter { seen.insert($0).inserted }.map {
                root + "/" + OverlayFileSystem.upperName(isolation: .perUser, uid: $0)
            }
        }
    }
}
