import Foundation
import Testing

@testable import NodeService

@Suite struct MountTableTests {
    @Test func aProcfsFileIsReadPastItsFirstPage() {
        // procfs reports size 0 and gives a page per read: a container's mountinfo outgrows 4 KiB, and mounts
        // listed past it went unseen. This process's own maps are well over a page.
        let maps = (try? WholeFile.read("/proc/self/maps").get()) ?? Data()
        #expect(maps.count > 4096)
        #expect(maps.last == UInt8(ascii: "\n"))
        #expect(throws: WholeFile.Failure(errno: ENOENT)) { try WholeFile.read("/nonexistent/file").get() }
    }

    @Test func findsMcvfsMountsAndUnescapesPaths() {
        let table = MountTable(
            mountinfo: """
                22 1 0:21 / /proc rw,nosuid - proc proc rw
                60 22 0:50 / /mnt/triton rw,nosuid,nodev,relatime shared:30 - fuse.mcvfs mcvfs#reg/org/cache rw,user_id=0
                61 22 0:51 / /tmp/with\\040space rw master:1 - fuse.mcvfs mcvfs#reg/x rw
                62 22 0:52 / /other rw - fuse.sshfs host: rw
                """)
        #expect(table.entries.count == 4)
        #expect(table.mcvfsMounts.map(\.mountpoint) == ["/mnt/triton", "/tmp/with space"])
        #expect(table.mcvfsMounts.first?.source == "mcvfs#reg/org/cache")
        #expect(table.mcvfsMounts.map(\.device) == ["0:50", "0:51"])
    }
}
