extension MountTable {
    /// The mounts stacked on `mountpoint`, bottom first: each one above is mounted on the root of the one below
    /// (`MOVE_MOUNT_BENEATH` slips a new one in under the top). Empty when nothing is mounted there.
    public func stack(at mountpoint: String) -> [Entry] {
        let here = entries.filter { $0.mountpoint == mountpoint }
        guard var current = here.first(where: { entry in !here.contains { $0.id == entry.parent } }) else {
            return []
        }
        var stack = [current]
        while let next = here.first(where: { $0.parent == current.id }), stack.count < here.count {
            stack.append(next)
            current = next
        }
        return stack
    }

    /// Whether the mcvfs mount `id` is being replaced: a newer mcvfs mount waits beneath it (it is the mount's
    /// parent, on the same mountpoint). A mount no longer in the table is judged by the caller, from the path.
    public func hasReplacementBeneath(mount id: Int) -> Bool {
        guard let own = entries.first(where: { $0.id == id }) else { return false }
        let stack = self.stack(at: own.mountpoint)
        guard let index = stack.firstIndex(where: { $0.id == id }), index > 0 else { return false }
        return stack[index - 1].fsType == Self.mcvfsType
    }
}
