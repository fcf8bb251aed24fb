import Foundation
import Glibc
import Testing

@testable import NodeService

/// A datagram socket the test owns, bound at a path or an abstract name, to receive what the notifier sends.
final class DatagramReceiver {
    let fd: Int32
    let name: String

    init(abstract: Bool) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let unique = "mcvfs-notify-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        name = abstract ? "@\(unique)" : NSTemporaryDirectory() + "/\(unique).sock"
        var (address, length) = try SystemdNotifier.address(name)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        try #require(rc == 0, "bind \(name): errno \(errno)")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)  // a hang guard, not an assertion
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(fd)
        if !name.hasPrefix("@") { unlink(name) }
    }

    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n < 0 ? nil : String(decoding: buffer[0..<n], as: UTF8.self)
    }
}

@Suite struct SystemdNotifierTests {
    @Test(arguments: [false, true])
    func readyStatusAndStoppingArriveAsDatagrams(abstract: Bool) throws {
        let receiver = try DatagramReceiver(abstract: abstract)
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": receiver.name])
        #expect(notifier.isEnabled)
        try notifier.ready(status: "serving org/cache\nat /mnt")
        #expect(receiver.receive() == "READY=1\nSTATUS=serving org/cache at /mnt")
        try notifier.status("fetched 3 layers")
        #expect(receiver.receive() == "STATUS=fetched 3 layers")
        try notifier.stopping()
        #expect(receiver.receive() == "STOPPING=1")
    }

    @Test func withoutNotifySocketNothingIsSent() throws {
        let notifier = SystemdNotifier(environment: [:])
        #expect(!notifier.isEnabled)
        try notifier.ready()
        try notifier.stopping(status: "bye")
        #expect(!SystemdNotifier(environment: ["NOTIFY_SOCKET": ""]).isEnabled)
    }

    @Test func addressLengths() throws {
        let offset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        // A path counts its terminating NUL; an abstract name counts exactly its bytes, the leading NUL included.
        #expect(try SystemdNotifier.address("/run/systemd/notify").length == socklen_t(offset + 20))
        let abstract = try SystemdNotifier.address("@sd")
        #expect(abstract.length == socklen_t(offset + 3))
        #expect(abstract.storage.sun_path.0 == 0)
        #expect(abstract.storage.sun_path.1 == CChar(UInt8(ascii: "s")))
    }

    @Test(arguments: ["relative/sock", "@", "/" + String(repeating: "x", count: 200)])
    func invalidSocketNamesAreRejected(name: String) {
        #expect(throws: ServiceError.invalidNotifySocket(name)) { try SystemdNotifier.address(name) }
    }

    @Test func sendingToAMissingSocketFails() {
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/nonexistent/mcvfs-notify.sock"])
        #expect(throws: ServiceError.self) { try notifier.ready() }
    }
}
