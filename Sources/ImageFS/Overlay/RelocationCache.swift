import Foundation
import Glibc
import Synchronization

/// What relocating upper files gave, by the version of the file it came from, bounded in bytes (least recently
/// used first out).
///
/// The kernel never keeps an upper file's attributes, so every `stat` of a group file or `vllm_compile_cache.py`
/// relocates it again, as often as its user asks: with this, each version of a file is relocated once, and every
/// open of it shares one buffer. A version is its device, inode, size, and modification and change times; a file
/// changed within the last second is not kept (a second write of the same size in one timestamp tick would look the
/// same, as git's "racy" index entries do), which costs only the bounded work of relocating it again.
final class RelocationCache: Sendable {
    /// The overlay's cache: at most this many bytes of relocated files (and bookkeeping) for all users together.
    static let capacity = 32 << 20

    struct Key: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        /// Nanoseconds since the epoch.
        var modified: Int64
        var changed: Int64
        /// The path decides the directory a group file's children are relocated to (hard links share an inode).
        var path: [String]

        init(path: [String], info: stat) {
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            size = Int64(info.st_size)
            modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            changed = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
            self.path = path
        }
    }

    private let state: Mutex<State>

    init(capacity: Int = RelocationCache.capacity) {
        state = Mutex(State(capacity: capacity))
    }

    /// What relocating this version gave (`.some(nil)`: nothing to change), or nil when not known.
    func value(for key: Key) -> Data?? {
        state.withLock { $0.value(for: key) }
    }

    /// Keeps `value` for `key` unless the file changed too recently to tell its versions apart.
    func insert(_ value: Data?, for key: Key) {
        guard key.changed / 1_000_000_000 + 1 < Int64(time(nil)) else { return }
        state.withLock { $0.insert(value, for: key) }
    }

    var bytes: Int { state.withLock { $0.bytes } }

    /// The cache proper, least recently used first out, as a list threaded through `slots`.
    struct State {
        let capacity: Int
        private(set) var bytes = 0
        private var slots: [Slot?] = []
        private var free: [Int] = []
        private var index: [Key: Int] = [:]
        private var newest: Int?
        private var oldest: Int?

        struct Slot {
            var key: Key
            var value: Data?
            var cost: Int
            var newer: Int?
            var older: Int?
        }

        init(capacity: Int) { self.capacity = capacity }

        var count: Int { index.count }

        /// What an entry costs: its bytes, its path, and a fixed share for the bookkeeping, so that entries with
        /// nothing to hold are bounded in number too.
        static func cost(of value: Data?, for key: Key) -> Int {
            (value?.count ?? 0) + key.path.reduce(0) { $0 + $1.utf8.count } + 256
        }

        mutating func value(for key: Key) -> Data?? {
            guard let slot = index[key] else { return nil }
            unlink(slot)
            link(slot)
            return .some(slots[slot]!.value)
        }

        mutating func insert(_ value: Data?, for key: Key) {
            if let existing = index[key] { remove(existing) }
            let cost = Self.cost(of: value, for: key)
            guard cost <= capacity else { return }
            while bytes + cost > capacity, let oldest { remove(oldest) }
            let entry = Slot(key: key, value: value, cost: cost)
            let slot: Int
            if let reused = free.popLast() {
                slot = reused
                slots[slot] = entry
            } else {
                slot = slots.count
                slots.append(entry)
            }
            index[key] = slot
            bytes += cost
            link(slot)
        }

        private mutating func remove(_ slot: Int) {
            unlink(slot)
            let entry = slots[slot]!
            index[entry.key] = nil
            bytes -= entry.cost
            slots[slot] = nil
            free.append(slot)
        }

        /// Makes `slot` the newest.
        private mutating func link(_ slot: Int) {
            slots[slot]!.older = newest
            slots[slot]!.newer = nil
            if let newest { slots[newest]!.newer = slot }
            newest = slot
            if oldest == nil { oldest = slot }
        }

        private mutating func unlink(_ slot: Int) {
            let (newer, older) = (slots[slot]!.newer, slots[slot]!.older)
            if let newer { slots[newer]!.older = older } else { newest = older }
            if let older { slots[older]!.newer = newer } else { oldest = newer }
        }
    }
}
