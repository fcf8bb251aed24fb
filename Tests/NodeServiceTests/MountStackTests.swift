import NodeService
import Testing

/// Mounts stacked on one mountpoint, as `/proc/self/mountinfo` shows them before and after a new mount goes
/// beneath (`MOVE_MOUNT_BENEATH`): the new one takes the old one's place as a child of the parent, and the old
/// one is re-parented onto the new one's root.
@Suite struct MountStackTests {
    static func line(_ id: Int, _ parent: Int, _ point: String, _ type: String) -> String {
        "\(id) \(parent) 0:\(id) / \(point) rw,relatime shared:\(id) - \(type) src rw"
    }

    static let root = line(27, 1, "/", "ext4")
    static let other = line(40, 27, "/mnt/other", "fuse.mcvfs")

    @Test func aSingleMountIsItsOwnStack() {
        let table = MountTable(
            mountinfo: [Self.root, Self.line(50, 27, "/mnt/t", "fuse.mcvfs")].joined(separator: "\n"))
        #expect(table.stack(at: "/mnt/t").map(\.id) == [50])
        #expect(table.stack(at: "/mnt/none").isEmpty)
        #expect(!table.hasReplacementBeneath(mount: 50))
    }

    @Test func aReplacementBeneathIsTheParentOfTheOldMount() {
        // 50 was on /mnt/t; 60 went beneath it: 60's parent is the directory's mount, 50's parent is 60.
        let table = MountTable(
            mountinfo: [
                Self.root, Self.other, Self.line(50, 60, "/mnt/t", "fuse.mcvfs"),
                Self.line(60, 27, "/mnt/t", "fuse.mcvfs"),
            ].joined(separator: "\n"))
        #expect(table.stack(at: "/mnt/t").map(\.id) == [60, 50])
        #expect(table.hasReplacementBeneath(mount: 50))
        #expect(!table.hasReplacementBeneath(mount: 60))
        #expect(!table.hasReplacementBeneath(mount: 40))
    }

    @Test func aMountOfAnotherKindBeneathIsNoReplacement() {
        let table = MountTable(
            mountinfo: [Self.root, Self.line(50, 60, "/mnt/t", "fuse.mcvfs"), Self.line(60, 27, "/mnt/t", "tmpfs")]
                .joined(separator: "\n"))
        #expect(table.stack(at: "/mnt/t").map(\.id) == [60, 50])
        #expect(!table.hasReplacementBeneath(mount: 50))
    }

    @Test func idsAndParentsAreParsed() {
        let table = MountTable(mountinfo: Self.line(61, 27, "/a\\040b", "fuse.mcvfs"))
        #expect(table.entries.map(\.id) == [61] && table.entries.map(\.parent) == [27])
        #expect(table.stack(at: "/a b").count == 1)
    }
}
