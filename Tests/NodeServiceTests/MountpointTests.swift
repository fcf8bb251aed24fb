import Foundation
import Glibc
import NodeService
import TestSupport
import Testing

/// What `mount` finds at its mountpoint before it mounts, and what it refuses.
@Suite struct MountPlacementTests {
    @Test func anEmptyDirectoryTakesTheMountOnTop() throws {
        let directory = try TemporaryDirectory()
        let placement = try MountPlacement.inspect(directory.path, replace: false)
        #expect(placement.existing == .none)
        #expect(!placement.replacesLiveMount)
    }

    @Test func aMissingMountpointInAnExistingDirectoryIsMade() throws {
        let directory = try TemporaryDirectory()
        let placement = try MountPlacement.inspect(directory.file("mnt"), replace: false)
        #expect(placement.existing == .none)
        var info = stat()
        #expect(stat(directory.file("mnt"), &info) == 0 && info.st_mode & S_IFMT == S_IFDIR)
    }

    @Test func whatCannotBeMountedOnSaysWhy() throws {
        let directory = try TemporaryDirectory()
        try directory.write("x", to: "file")
        #expect(throws: MountPlacement.Problem.notADirectory(directory.file("file"))) {
            try MountPlacement.inspect(directory.file("file"), replace: false)
        }
        #expect(throws: MountPlacement.Problem.unreachable(directory.file("no/such/parent"), errno: ENOENT)) {
            try MountPlacement.inspect(directory.file("no/such/parent"), replace: false)
        }
        // The root filesystem is a mount point, and not mcvfs's: never mounted over, even with --replace.
        #expect {
            try MountPlacement.inspect("/", replace: true)
        } throws: { error in
            guard case .otherMount("/", _)? = error as? MountPlacement.Problem else { return false }
            return true
        }
    }

    @Test func unmountRefusesWhatIsNotAMount() throws {
        let directory = try TemporaryDirectory()
        #expect {
            try Mountpoint.unmount(directory.path, lazy: false)
        } throws: { error in
            guard case .notMounted? = error as? Mountpoint.Problem else { return false }
            return true
        }
    }

    @Test func aProblemReadsAsTheErrorLineSaysIt() {
        #expect(
            MountPlacement.Problem.unreachable("/mnt/x", errno: ENOENT).description
                == "mountpoint /mnt/x: No such file or directory")
        #expect(
            MountPlacement.Problem.liveMount("/mnt/x").description
                == "/mnt/x is already an mcvfs mount; run `mcvfs unmount /mnt/x` first, or pass --replace to take it "
                + "over without a gap")
        #expect(
            Mountpoint.Problem.failed("/mnt/x", message: "Device or resource busy", busy: true).description
                == "cannot unmount /mnt/x: Device or resource busy; files under it are open: close them, or try --lazy")
        #expect(
            Mountpoint.Problem.notMcvfs("/", fsType: "ext4").description
                == "/ is not an mcvfs mount (it is ext4); use umount(8) for it")
    }
}
