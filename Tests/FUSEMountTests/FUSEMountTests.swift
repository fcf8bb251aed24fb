import FUSEMount
import Foundation
import NodeService
import Testing

/// What runs without /dev/fuse or privileges: the mount IDs the mount API reports are mountinfo's, and paths
/// that are not there have none. Attaching, beneath a mount and on top, runs in Tests/e2e (test_restarts.py,
/// test_containers.py).
@Suite struct FUSEMountTests {
    @Test(arguments: ["/", "/proc", "/sys"])
    func theTopMountIDOfAMountpointIsItsMountinfoID(_ path: String) throws {
        let id = try #require(FUSEMount.topMountID(at: path))
        let entry = try #require(MountTable.current().entries.last { $0.mountpoint == path })
        #expect(UInt64(entry.id) == id, "\(path): statx says \(id), mountinfo \(entry.id)")
    }

    @Test func aFileBelowAMountpointIsOnThatMount() throws {
        #expect(FUSEMount.topMountID(at: "/proc/self/status") == FUSEMount.topMountID(at: "/proc"))
    }

    @Test func aMissingPathHasNoMount() {
        #expect(FUSEMount.topMountID(at: "/nonexistent-\(UUID().uuidString)") == nil)
        #expect(!FUSEMount.detach(at: "/nonexistent-\(UUID().uuidString)", ifTopIs: 1))
    }

    @Test func detachingRefusesAMountThatIsNotTheOneNamed() throws {
        let id = try #require(FUSEMount.topMountID(at: "/proc"))
        #expect(!FUSEMount.detach(at: "/proc", ifTopIs: id + 1_000_000))
        #expect(FUSEMount.topMountID(at: "/proc") == id)
    }
}
