import OCI

/// What a repository mount's live refresh knows of its tags, and what it decides from a new listing. Pure, so the
/// rules are tested without a registry; `CatalogRefresher` does the requests.
///
/// The rules (docs/fleet.md):
/// - A tag not seen before is resolved (manifest, config), checked against the GPU selection and the signature
///   policy, and its image added when used.
/// - A known tag is asked about with one `HEAD`, and resolved again only when it moved, or when the policy
///   refused it (a signature may have been added since). A content-derived tag (`FleetTag`) cannot move without
///   its name lying, so it is never asked about again.
/// - Images are only ever added: an image served stays served (its tag moved or went away, or not), since a file
///   that has been served never changes. A moved tag's new image ranks after every image served.
public struct CatalogRefresh: Sendable {
    struct Known: Sendable, Equatable {
        /// What the tag named when last resolved (an index's digest for an index); nil when unknown.
        var digest: Digest?
        /// Resolve again even if it did not move: the policy refused it.
        var recheck: Bool
    }

    public enum Step: Sendable, Equatable {
        /// Known and content-derived: nothing to ask.
        case keep
        /// Known: ask whether it moved.
        case head
        /// New: resolve it.
        case resolve
    }

    /// Everything served and skipped, in merge order (images added later last).
    public private(set) var catalog: Catalog
    var known: [String: Known] = [:]

    /// - Parameter catalog: what the mount resolved and serves.
    public init(catalog: Catalog) {
        self.catalog = catalog
        for entry in catalog.entries where !ArtifactTag.isCosign(entry.name) {
            let tag = Self.tag(of: entry.name)
            known[tag] = Known(digest: entry.indexDigest ?? entry.digest, recheck: false)
        }
    }

    /// The tag an entry stands for (`tag[n]` is the n-th manifest of the index at `tag`).
    static func tag(of name: String) -> String {
        guard name.hasSuffix("]"), let open = name.lastIndex(of: "[") else { return name }
        return String(name[..<open])
    }

    /// What to do for `tag`, listed now.
    public func step(for tag: String) -> Step {
        guard let known = known[tag] else { return .resolve }
        if let digest = known.digest, !known.recheck, FleetTag.isContentDerived(tag, digest: digest) { return .keep }
        return .head
    }

    /// Whether a known tag whose `HEAD` answered `digest` must be resolved again.
    public func moved(_ tag: String, to digest: Digest?) -> Bool {
        guard let known = known[tag] else { return true }
        return known.recheck || digest == nil || known.digest != digest
    }

    /// Folds in what `tag` resolved to now.
    /// - Parameters:
    ///   - digest: what the tag names (an index's digest for an index).
    ///   - entries: its catalog entries, policy applied.
    ///   - refusedByPolicy: whether the policy refused any of them (the tag is then resolved again next time).
    /// - Returns: the images to add to the served tree (used, and not served yet), and the entries not used.
    public mutating func absorb(
        tag: String, digest: Digest?, entries: [Catalog.Entry], refusedByPolicy: Bool
    ) -> (added: [CacheImage], skipped: [Catalog.Entry]) {
        known[tag] = Known(digest: digest ?? entries.first?.digest, recheck: refusedByPolicy)
        let served = Set(catalog.used.map(\.digest))
        let added = entries.filter { $0.isUsed && !served.contains($0.digest!) }
        let skipped = entries.filter { !$0.isUsed }
        // A tag's earlier skips are replaced by what it says now; what it served stays, pinned.
        catalog.entries.removeAll { !$0.isUsed && Self.tag(of: $0.name) == tag }
        catalog.entries += added + skipped
        return (added.compactMap(\.image), skipped)
    }

    /// Forgets the tags not listed any more (their images stay served); one listed again is resolved anew.
    public mutating func keepOnly(listed tags: Set<String>) {
        known = known.filter { tags.contains($0.key) }
    }
}
