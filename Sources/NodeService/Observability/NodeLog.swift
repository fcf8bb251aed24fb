/// Where the node's parts report what an operator should read: a registry that fell back, a stale lease removed,
/// an eviction. The executable sends it to its log (stderr, the daemon's file, journald); tests collect it.
public struct NodeLog: Sendable {
    public var info: @Sendable (String) -> Void
    public var warning: @Sendable (String) -> Void

    public init(info: @escaping @Sendable (String) -> Void, warning: @escaping @Sendable (String) -> Void) {
        self.info = info
        self.warning = warning
    }

    /// Drops everything.
    public static let silent = NodeLog(info: { _ in }, warning: { _ in })
}
