import BlobCache
import Foundation
import GPU
import OCI
import Registry
import RemoteLayers
import Synchronization

/// A repository mount's live refresh (`mount --refresh-interval`): re-lists the repository's tags on an interval
/// (`Periodic`), resolves the new and moved ones (`CatalogRefresh`), applies the mount's GPU selection and
/// signature policy, and hands the images to add to the mount, which adds them to the served tree without a
/// remount. The grown catalog is recorded, so an offline remount serves what this mount served.
///
/// A refresh that fails (the registry down, a listing refused) is logged and counted and changes nothing: the
/// next interval tries again. One tag that cannot be read this time is left for the next refresh alone.
///
/// Lock order: `state` is a leaf, never held across a request or the `apply` callback.
public final class CatalogRefresher: Sendable {
    struct State {
        var refresh: CatalogRefresh
        var status: MountStatus.Refresh
    }

    let upstream: Upstream
    let store: any BlobStore
    let records: CatalogRecords
    let selection: ResolvedSelection
    /// What the mount narrows every catalog with after the GPU selection (`--triton-version`).
    let narrow: @Sendable (inout Catalog) -> Void
    let policy: (any CatalogPolicy)?
    /// Adds images to the mount, with the catalog as it stands after them.
    let apply: @Sendable ([CacheImage], Catalog) -> Void
    let log: NodeLog
    let interval: Duration
    private let state: Mutex<State>
    private let schedule = Mutex<Periodic?>(nil)

    /// - Parameters:
    ///   - catalog: what the mount resolved and serves (its policy applied).
    ///   - narrow: what the mount's catalog went through after the GPU selection, applied to every tag resolved.
    ///   - policy: the mount's signature policy, applied to every tag resolved from now on.
    public init(
        catalog: Catalog, upstream: Upstream, store: any BlobStore, records: CatalogRecords,
        selection: ResolvedSelection, narrow: @escaping @Sendable (inout Catalog) -> Void = { _ in },
        policy: (any CatalogPolicy)?, interval: Duration,
        apply: @escaping @Sendable ([CacheImage], Catalog) -> Void, log: NodeLog
    ) {
        self.upstream = upstream
        self.store = store
        self.records = records
        self.selection = selection
        self.narrow = narrow
        self.policy = policy
        self.apply = apply
        self.log = log
        self.interval = interval
        self.state = Mutex(
            State(refresh: CatalogRefresh(catalog: catalog), status: .init(intervalSeconds: interval.seconds)))
    }

    public var status: MountStatus.Refresh { state.withLock { $0.status } }

    public func start() {
        let periodic = Periodic(
            name: "mcvfs-refresh", interval: interval,
            scheduled: { [self] next in state.withLock { $0.status.nextRefresh = rfc3339(next) } },
            body: { [self] in refreshOnce() })
        schedule.withLock { $0 = periodic }
        periodic.start()
    }

    public func stop() { schedule.withLock { $0 }?.stop(waitingAtMost: .seconds(1)) }

    /// One refresh; returns the images it added.
    @discardableResult
    public func refreshOnce() -> [CacheImage] {
        let started = rfc3339(Date())
        do {
            let (added, skipped, tags) = try refresh()
            let catalog = state.withLock { state -> Catalog in
                state.status.refreshes += 1
                state.status.lastRefresh = started
                state.status.tags = tags
                state.status.lastError = nil
                state.status.imagesAdded += added.count
                if !added.isEmpty { state.status.lastAdded = added.map { "\($0.name) \($0.digest)" } }
                state.status.lastSkipped = skipped.prefix(50).map { "\($0.name): \($0.skipReason ?? "")" }
                return state.refresh.catalog
            }
            guard !added.isEmpty else { return [] }
            for image in added { log.info("refresh: using \(image.name) \(image.digest.short)") }
            apply(added, catalog)
            do { try records.save(catalog, selection: selection.description) } catch {
                log.warning("refresh: cannot record the grown catalog (an offline remount serves less): \(error)")
            }
            return added
        } catch {
            state.withLock { state in
                state.status.refreshes += 1
                state.status.failures += 1
                state.status.lastRefresh = started
                state.status.lastError = "\(error)"
            }
            log.warning("refresh of \(upstream.reference) failed (retried in \(interval)): \(error)")
            return []
        }
    }

    private func refresh() throws -> (added: [CacheImage], skipped: [Catalog.Entry], tags: Int) {
        guard let client = upstream.origin else { return ([], [], 0) }
        let reference = upstream.reference
        let tags = try client.listTags(repository: reference.repository).filter { !ArtifactTag.isCosign($0) }
        var added: [CacheImage] = []
        var skipped: [Catalog.Entry] = []
        for tag in tags.sorted() {
            let refresh = state.withLock { $0.refresh }
            var digest: Digest?
            switch refresh.step(for: tag) {
            case .keep: continue
            case .head:
                do { digest = try client.headManifest(repository: reference.repository, reference: tag).digest } catch {
                    log.info("refresh: \(tag) left for the next refresh: \(error)")
                    continue
                }
                guard refresh.moved(tag, to: digest) else { continue }
            case .resolve: break
            }
            let resolved: (entries: [Catalog.Entry], refused: Bool)
            do { resolved = try resolve(tag, client: client) } catch {
                log.info("refresh: \(tag) left for the next refresh: \(error)")
                continue
            }
            let outcome = state.withLock { state in
                state.refresh.absorb(
                    tag: tag, digest: digest ?? resolved.entries.first?.indexDigest, entries: resolved.entries,
                    refusedByPolicy: resolved.refused)
            }
            added += outcome.added
            skipped += outcome.skipped
        }
        state.withLock { $0.refresh.keepOnly(listed: Set(tags)) }
        return (added, skipped, tags.count)
    }

    /// `tag`'s entries for this mount: its GPU selection and narrowing, then its signature policy.
    /// - Returns: the entries, and whether the policy refused any.
    private func resolve(_ tag: String, client: RegistryClient) throws -> (entries: [Catalog.Entry], refused: Bool) {
        let repository = upstream.reference.withoutTag
        var catalog: Catalog
        do {
            catalog = try ImageResolver(client: client, store: store).catalog(
                for: ImageReference(registry: repository.registry, repository: repository.repository, tag: tag),
                accepts: selection.accepts, selectionDescription: selection.description)
        } catch let unusable as ImageResolver.UnusableReference {
            let reason = unusable.reasons.joined(separator: "; ")
            return (
                [
                    Catalog.Entry(
                        name: tag, digest: nil, mediaType: nil, image: nil, kinds: [], targets: nil, skipReason: reason)
                ], false
            )
        }
        narrow(&catalog)
        let usedBefore = catalog.used.count
        if let policy, try policy.applies(to: repository) {
            try policy.enforce(on: &catalog, reference: repository, client: upstream.signatureClient)
        }
        return (catalog.entries, catalog.used.count < usedBefore)
    }
}

extension ImageReference {
    /// The repository alone.
    var withoutTag: ImageReference { ImageReference(registry: registry, repository: repository) }
}
