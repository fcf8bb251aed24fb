import Foundation
import Synchronization

@testable import Registry

/// Records the waits a client asked for instead of sleeping.
final class SleepRecorder: Sendable {
    private let waits = Mutex<[Duration]>([])
    var recorded: [Duration] { waits.withLock { $0 } }
    func sleep(_ duration: Duration) { waits.withLock { $0.append(duration) } }
}

/// A clock tests move by hand.
final class TestClock: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 += seconds } }
}

extension Data {
    init(repeating text: String, count: Int) {
        var data = Data()
        while data.count < count { data.append(contentsOf: text.utf8) }
        self = data.prefix(count)
    }
}
