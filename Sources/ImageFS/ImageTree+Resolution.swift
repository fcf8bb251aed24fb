import Foundation

/// How a top-level name's subtree comes to be: resolved once from the images added by its first lookup, then
/// completed by the images that arrive later.
extension ImageTree {
    /// Resolves a pending top-level name, once: concurrent lookups of it wait for the first and share its outcome.
    func resolve(_ top: UInt64) throws(FSError) {
        guard state.withLock({ $0.pending[top] != nil }) else { return }
        do {
            try resolutions.run(top) { try resolvePending(top) }
        } catch let error as FSError {
            throw error
        } catch {
            throw .unavailable(reason: String(describing: error))
        }
    }

    /// The work of one resolution of `top`, run by the single flight.
    private func resolvePending(_ top: UInt64) throws(FSError) {
        while let pending = state.withLock({ $0.pending[top] }) {
            if let failure = pending.lastFailure, ContinuousClock.now - failure.at < retryDelay {
                throw .unavailable(reason: failure.reason)
            }
            var report = ImageTreeBuilder.Report()
            let resolution: SubtreeResolver.Resolution
            do {
                // Reads metadata from the registry for a lazily fetched image: under the operation's deadline.
                resolution = try withinBudget { try resolver.resolve(pending.contributions, report: &report) }
            } catch {
                let reason = String(describing: error)
                state.withLock { $0.pending[top]?.lastFailure = (ContinuousClock.now, reason) }
                throw error as? FSError ?? .unavailable(reason: reason)
            }
            let resolved = state.withLock { state in
                // An image that joined the name meanwhile may rank first: resolve again with it.
                guard state.pending[top]?.contributions.count == pending.contributions.count else { return false }
                state.pending[top] = nil
                install(resolution, report: report, at: top, first: true, in: &state)
                return true
            }
            if resolved {
                announce(resolution.conflicts)
                break
            }
        }
    }

    /// Adds what an image that arrived after `top` was resolved has under it: only KEYs that no image gives yet,
    /// so nothing that could have been served changes. An image whose metadata cannot be read adds nothing here.
    func merge(_ contribution: SubtreeResolver.Contribution, into top: UInt64) {
        // Resolved outside the lock (it may read metadata); claimed again should another late image have claimed
        // KEYs of the name meanwhile.
        while true {
            var report = ImageTreeBuilder.Report()
            let ownership = state.withLock { $0.ownership[top] } ?? KeyOwnership()
            guard let resolution = try? resolver.resolve([contribution], ownership: ownership, report: &report) else {
                return
            }
            let merged = state.withLock { state in
                guard (state.ownership[top] ?? KeyOwnership()).version == ownership.version else { return false }
                install(resolution, report: report, at: top, first: false, in: &state)
                return true
            }
            if merged {
                announce(resolution.conflicts)
                return
            }
        }
    }

    /// Takes what a resolution of `top` found: who owns its KEYs, its entries, what it reported and its conflicts.
    private func install(
        _ resolution: SubtreeResolver.Resolution, report: ImageTreeBuilder.Report, at top: UInt64, first: Bool,
        in state: inout State
    ) {
        state.ownership[top] = resolution.ownership
        attach(resolution.entries, at: top, first: first, in: &state)
        state.report.add(report)
        state.record(resolution.conflicts)
    }

    /// Logs conflicts: each is a sign of compromise or of a compiler that is not deterministic.
    private func announce(_ conflicts: [KeyOwnership.Conflict]) {
        for conflict in conflicts {
            let outcome =
                conflict.served.map { "the mount keeps serving \($0)'s" }
                ?? "the mount serves neither (the KEY is absent: workloads compile it locally)"
            log(
                "\(conflict): two images hold different bytes for one KEY (a compromised publisher, or a compiler "
                    + "that is not deterministic); \(outcome)")
        }
    }

    /// Adds a top-level name's entries (sorted, parents first) below its node. The first time, the name takes the
    /// resolution's attributes, or leaves the root when nothing of it shows; a path that exists is never changed.
    private func attach(_ entries: [SubtreeResolver.Entry], at top: UInt64, first: Bool, in state: inout State) {
        let topIndex = Int(top - firstIno)
        let name = state.nodes[topIndex].name
        guard let head = entries.first, head.path == name else {
            if first {
                state.nodes[0].children[name] = nil
                state.nodes[0].listing.removeAll { $0 == name }
                state.hidden.insert(name)
            }
            return
        }
        if first {
            state.nodes[topIndex] = Self.node(
                ino: top, parent: rootIno, name: name, file: head.file, rewritten: head.rewritten,
                directoryPermissions: resolver.directoryPermissions)
        }
        var inoByPath = state.nodes[topIndex].kind == .directory ? [name: top] : [:]
        for entry in entries.dropFirst() {
            let (directory, childName) = SubtreeResolver.split(entry.path)
            // A path below a name that is not a directory here (a file in an earlier image) does not show.
            guard let parent = inoByPath[directory] else { continue }
            let parentIndex = Int(parent - firstIno)
            if let existing = state.nodes[parentIndex].children[childName] {
                if state.nodes[Int(existing - firstIno)].kind == .directory { inoByPath[entry.path] = existing }
                continue
            }
            let ino = firstIno + UInt64(state.nodes.count)
            let node = Self.node(
                ino: ino, parent: parent, name: childName, file: entry.file, rewritten: entry.rewritten,
                directoryPermissions: resolver.directoryPermissions)
            if node.kind == .directory { inoByPath[entry.path] = ino }
            state.nodes.append(node)
            state.nodes[parentIndex].children[childName] = ino
            // Entries come sorted: a first resolution appends; a later image's names may fall in between.
            let listing = state.nodes[parentIndex].listing
            if let last = listing.last, last > childName {
                let index = listing.firstIndex { $0 > childName } ?? listing.endIndex
                state.nodes[parentIndex].listing.insert(childName, at: index)
            } else {
                state.nodes[parentIndex].listing.append(childName)
            }
        }
    }
}

extension ImageTreeBuilder.Report {
    mutating func add(_ other: ImageTreeBuilder.Report) {
        kernelsShown += other.kernelsShown
        kernelsHidden += other.kernelsHidden
        groupFilesRelocated += other.groupFilesRelocated
        if let absent = other.lookupsAbsentDuringFaults {
            lookupsAbsentDuringFaults = (lookupsAbsentDuringFaults ?? 0) + absent
        }
        if let conflicts = other.keyConflicts { keyConflicts = (keyConflicts ?? 0) + conflicts }
        if let listed = other.conflicts { self.conflicts = (self.conflicts ?? []) + listed }
    }
}
