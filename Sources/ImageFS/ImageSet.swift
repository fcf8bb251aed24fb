import Foundation
import LayerArchive
import OCI
import Synchronization
import TimeBudget

/// The images of a mount and how far each got: not tried yet, loading, loaded (in the tree), or failed with the
/// time of its next retry; and each one's `Precedence`, fixed when it joins the mount.
///
/// Each image loads on its own, in the background, the first time an access needs the tree: no load waits for
/// another. A lookup waits (within its operation's deadline) while no loaded image has the name it wants, and,
/// to resolve a name, only for the images still in their first load that rank before the first image that has it,
/// or alike: a KEY of a base image with precedence is served without waiting for the others, and a healthy mount
/// resolves each KEY from the same image (or withholds it) whichever loaded first. An image that is still in its first load when a wait for
/// it runs out of time is not waited for again, and neither are retries: a slow or failing image holds lookups
/// back once, by one budget at most. A failed image is retried, in the background, by the first access after
/// `retryDelay`; until then it costs nothing. Images can be added while the mount serves (`append`); nothing waits
/// for them.
public final class ImageSet: Sendable {
    /// What status and metrics show of one image.
    public struct Status: Sendable, Hashable, Codable {
        public enum Phase: String, Sendable, Hashable, Codable {
            case pending, loading, loaded, failed
        }
        public var name: String
        public var digest: Digest
        /// Where the image ranks when two have a KEY (`Precedence`), as status shows it.
        public var precedence: String?
        public var phase: Phase
        /// Loads of the image that failed so far.
        public var failures: Int
        /// Why the last load failed (kept once a retry worked, as the history of the image).
        public var lastError: String?
        public var lastFailure: Date?
        /// When a failed image is tried again: by the first access from then on.
        public var nextRetry: Date?
    }

    struct State {
        struct Entry {
            var image: CacheImage
            var precedence: Precedence
            var phase = Status.Phase.pending
            var failures = 0
            var lastError: String?
            var failedAt: ContinuousClock.Instant?
            var retryAt: ContinuousClock.Instant?
            /// A lookup that resolves a name waits for this image: until its first load settles, or a wait for it
            /// runs out of time.
            var holdsLookups = true
        }

        var entries: [Entry] = []
        /// Refreshes that added images so far: the batch of the next `append`.
        var batches = 0
        /// Moves each time an image settles (loaded or failed): a waiter that saw an older value looks again.
        var generation = 0
        /// Operations waiting for an image to settle.
        var waiters: [DispatchSemaphore] = []

        /// Marks the images due for a load (never tried, or failed and past their retry time) as loading.
        /// - Returns: their ranks (their places in `entries`) and images.
        mutating func takeDue(
            now: ContinuousClock.Instant
        ) -> [(rank: Int, image: CacheImage, precedence: Precedence)] {
            var due: [(Int, CacheImage, Precedence)] = []
            for rank in entries.indices {
                let entry = entries[rank]
                let isDue = entry.phase == .pending || (entry.phase == .failed && entry.retryAt ?? now <= now)
                guard isDue else { continue }
                entries[rank].phase = .loading
                due.append((rank, entries[rank].image, entries[rank].precedence))
            }
            return due
        }

        /// Records the end of a load; returns the waiters to wake.
        mutating func settle(
            _ rank: Int, failure: String?, now: ContinuousClock.Instant, retryDelay: Duration
        ) -> [DispatchSemaphore] {
            if let failure {
                entries[rank].phase = .failed
                entries[rank].failures += 1
                entries[rank].lastError = failure
                entries[rank].failedAt = now
                entries[rank].retryAt = now + retryDelay
            } else {
                entries[rank].phase = .loaded
                entries[rank].retryAt = nil
            }
            entries[rank].holdsLookups = false
            generation += 1
            defer { waiters = [] }
            return waiters
        }

        var isLoading: Bool { entries.contains { $0.phase == .loading } }

        /// Whether an image in its first load that ranks before `bound`, or alike, still holds lookups back.
        func isHoldingLookups(upTo bound: Precedence.Rank) -> Bool {
            entries.contains { $0.holdsLookups && $0.phase == .loading && $0.precedence.rank <= bound }
        }

        /// A wait for first loads ran out of time: the images still in theirs hold nothing back any more.
        mutating func stopHoldingLookups() {
            for rank in entries.indices where entries[rank].phase == .loading { entries[rank].holdsLookups = false }
        }

        var allLoaded: Bool { entries.allSatisfy { $0.phase == .loaded } }

        /// Why each image that is not in the tree is missing, for an `unavailable` error.
        func unavailable(now: ContinuousClock.Instant) -> [String] {
            entries.compactMap { entry in
                switch entry.phase {
                case .loaded: return nil
                case .pending: return "image \(entry.image.name) not loaded yet"
                case .loading: return "image \(entry.image.name) still loading"
                case .failed:
                    let retry = entry.retryAt.map { max(.zero, $0 - now) } ?? .zero
                    return "image \(entry.image.name) unavailable: \(entry.lastError ?? "?") "
                        + "(failed \(entry.failures) time(s); next retry in \(String(format: "%.1f", retry.seconds)) s)"
                }
            }
        }
    }

    /// Every wait for an image ends by the operation's deadline; an operation that bound none gets this budget.
    let budget: Duration
    private let provider: any LayerProvider
    private let retryDelay: Duration
    private let log: @Sendable (String) -> Void
    private let persistScheduled = Atomic(false)
    /// Indexes built from TOCs (and metadata a listing prefetched) are stored this long after a load: encoding
    /// thousands of entries and creating files would compete with the first kernels served.
    static let persistDelay = DispatchTimeInterval.seconds(3)
    /// Never held across a load, a wait or a call into the tree.
    private let state: Mutex<State>

    /// - Parameters:
    ///   - batches: when this node first used each image (`Precedence.batch`; absent: 0, the first).
    ///   - log: told of each failed load (the error, and when it is retried).
    init(
        images: [CacheImage], batches: [Digest: Int] = [:], provider: any LayerProvider, retryDelay: Duration,
        budget: Duration, log: @escaping @Sendable (String) -> Void
    ) {
        self.provider = provider
        self.retryDelay = retryDelay
        self.budget = budget
        self.log = log
        self.state = Mutex(
            State(
                entries: images.enumerated().map { position, image in
                    State.Entry(
                        image: image,
                        precedence: Precedence(of: image, position: position, batch: batches[image.digest] ?? 0))
                },
                batches: batches.values.max() ?? 0))
    }

    /// Adds images to the mount, as one batch: they rank after every image already in it (so they add KEYs only),
    /// load on the next access, and hold no lookup back (a serving mount does not stall for them).
    func append(_ images: [CacheImage]) {
        state.withLock { state in
            let known = Set(state.entries.map(\.image.digest))
            let new = images.filter { !known.contains($0.digest) }
            guard !new.isEmpty else { return }
            state.batches += 1
            let batch = state.batches
            state.entries += new.map {
                State.Entry(
                    image: $0, precedence: Precedence(of: $0, position: 0, batch: batch), holdsLookups: false)
            }
        }
    }

    var generation: Int { state.withLock { $0.generation } }

    var allLoaded: Bool { state.withLock { $0.allLoaded } }

    /// In the order they joined the mount (tag order, then each refresh's).
    var images: [CacheImage] { state.withLock { $0.entries.map(\.image) } }

    /// Each image's precedence, by its place in `images`.
    func precedence(ofRank rank: Int) -> Precedence { state.withLock { $0.entries[rank].precedence } }

    var statuses: [Status] {
        let now = ContinuousClock.now
        let date = Date()
        func wallClock(_ instant: ContinuousClock.Instant?) -> Date? {
            instant.map { date.addingTimeInterval(($0 - now).seconds) }
        }
        return state.withLock { state in
            state.entries.map { entry in
                Status(
                    name: entry.image.name, digest: entry.image.digest, precedence: entry.precedence.description,
                    phase: entry.phase, failures: entry.failures,
                    lastError: entry.lastError, lastFailure: wallClock(entry.failedAt),
                    nextRetry: entry.phase == .failed ? wallClock(entry.retryAt) : nil)
            }
        }
    }

    /// Starts, in the background, the loads that are due; each adds its image to `tree` when it succeeds.
    /// Each load gets a thread of its own: a load blocks on the network for as long as the registry makes it,
    /// and a pool shared with other work (Dispatch's) could run out of threads behind a few stalled ones.
    func startDue(into tree: ImageTree) {
        for (rank, image, precedence) in state.withLock({ $0.takeDue(now: .now) }) {
            Thread.detachNewThread { [self] in load(image, rank: rank, precedence: precedence, into: tree) }
        }
    }

    /// Loads one image's layers (no deadline: a download that keeps making progress is not cut short; a stalled
    /// one fails by the transport's own limits) and adds it to the tree.
    private func load(_ image: CacheImage, rank: Int, precedence: Precedence, into tree: ImageTree) {
        var failure: String?
        do {
            var layers: [LayerIndex] = []
            for layer in image.layers {
                do { layers.append(try provider.index(of: layer, in: image)) } catch {
                    failure = "layer \(layer.digest.short): \(error)"
                    throw error
                }
            }
            tree.add(ImageTreeBuilder.contributions(of: layers, image: image, precedence: precedence))
        } catch {
            failure = failure ?? "\(error)"
        }
        let waiters = state.withLock { $0.settle(rank, failure: failure, now: .now, retryDelay: retryDelay) }
        for waiter in waiters { waiter.signal() }
        if let failure {
            log("image \(image.name) (\(image.digest.short)) unavailable: \(failure); retried in \(retryDelay)")
        } else if !persistScheduled.exchange(true, ordering: .relaxed) {
            DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + Self.persistDelay) { [self] in
                persistScheduled.store(false, ordering: .relaxed)
                provider.persistPrefetched()
            }
        }
    }

    /// Waits, within the operation's deadline, for an image to settle after `generation` (starting the loads that
    /// are due first).
    /// - Returns: true when one did (look again); false when every image is in the tree, so a name it lacks does
    ///   not exist.
    /// - Throws: `unavailable`, naming the images that are not in the tree, once none is loading any more (an
    ///   image that failed may hold the name), or when the deadline passes first.
    func awaitChange(since generation: Int, into tree: ImageTree) throws(FSError) -> Bool {
        startDue(into: tree)
        let deadline = Deadline.current ?? .after(budget)
        while true {
            let semaphore = DispatchSemaphore(value: 0)
            let (changed, missing) = state.withLock { state -> (Bool, [String]?) in
                if state.generation != generation { return (true, nil) }
                if !state.isLoading { return (false, state.unavailable(now: .now)) }
                state.waiters.append(semaphore)
                return (false, nil)
            }
            if changed { return true }
            if let missing {
                if missing.isEmpty { return false }
                throw .unavailable(reason: missing.joined(separator: "; "))
            }
            if semaphore.wait(timeout: .now() + .nanoseconds(Int(deadline.remaining.nanoseconds))) == .timedOut {
                let missing = state.withLock { state in
                    state.waiters.removeAll { $0 === semaphore }
                    return state.generation != generation ? nil : state.unavailable(now: .now)
                }
                guard let missing else { return true }
                throw .unavailable(reason: "time budget spent waiting: " + missing.joined(separator: "; "))
            }
        }
    }

    /// Waits, within the operation's deadline, until no image in its first load that ranks before `bound()`, or
    /// alike (a peer whose copy of a KEY might differ), holds lookups back (those still in it at the deadline stop
    /// holding them). `bound` is asked again after each image settles (a loaded image may have the name, which
    /// lowers it), never under this set's lock; nil: no wait.
    func awaitFirstLoads(rankedUpTo bound: () -> Precedence.Rank?) {
        let deadline = Deadline.current ?? .after(budget)
        while true {
            guard let bound = bound() else { return }
            let semaphore = DispatchSemaphore(value: 0)
            let holding = state.withLock { state in
                guard state.isHoldingLookups(upTo: bound) else { return false }
                state.waiters.append(semaphore)
                return true
            }
            guard holding else { return }
            if semaphore.wait(timeout: .now() + .nanoseconds(Int(deadline.remaining.nanoseconds))) == .timedOut {
                state.withLock { state in
                    state.waiters.removeAll { $0 === semaphore }
                    state.stopHoldingLookups()
                }
                return
            }
        }
    }

    /// Waits, within the operation's deadline, until no image is loading (starting the loads that are due first).
    /// - Returns: why each image that is not in the tree is missing (empty when every image is in it).
    func awaitLoads(into tree: ImageTree) -> [String] {
        startDue(into: tree)
        let deadline = Deadline.current ?? .after(budget)
        while true {
            let semaphore = DispatchSemaphore(value: 0)
            let missing = state.withLock { state -> [String]? in
                guard state.isLoading else { return state.unavailable(now: .now) }
                state.waiters.append(semaphore)
                return nil
            }
            if let missing { return missing }
            if semaphore.wait(timeout: .now() + .nanoseconds(Int(deadline.remaining.nanoseconds))) == .timedOut {
                return state.withLock { state in
                    state.waiters.removeAll { $0 === semaphore }
                    return state.unavailable(now: .now)
                }
            }
        }
    }
}

extension Duration {
    /// Whole nanoseconds (rounded down), for `DispatchTime`.
    fileprivate var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    fileprivate var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
