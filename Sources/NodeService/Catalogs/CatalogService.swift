import BlobCache
import GPU
import OCI
import Registry
import RemoteLayers

/// A check every resolved catalog passes before anything of it is used: signature verification. It marks the
/// images it refuses as skipped, and throws when the user named one image and that image is refused.
public protocol CatalogPolicy: Sendable {
    /// Whether the policy has anything to check for `reference` (no flags: nothing is verified).
    func applies(to reference: ImageReference) throws -> Bool
    /// Verifies the used images of `catalog` through `client`; with `client` nil (offline) against the signatures
    /// kept at the last online verification.
    func enforce(on catalog: inout Catalog, reference: ImageReference, client: RegistryClient?) throws
}

/// Resolves a reference to its catalog for every command that needs one (`mount`, `fetch`, `extract`, `ls`):
/// from the recorded catalog when offline; through the mirror first when there is one; else from the origin,
/// falling back to the recorded catalog when the registry is unreachable, if the caller asks for that.
public struct CatalogService: Sendable {
    /// What is done with the recorded catalogs.
    public enum Recording: Sendable {
        /// Resolve from the registry only, record nothing (`ls`, `extract`).
        case none
        /// Record each resolution (`fetch`, which pre-warms a node for offline mounts).
        case record
        /// Record, and serve the recorded catalog when the registry is unreachable (`mount`).
        case recordAndFallBack
    }

    public let upstream: Upstream
    let store: any BlobStore
    let records: CatalogRecords
    let recording: Recording

    /// - Parameters:
    ///   - store: where image configs are kept, so a warm remount reads none from the registry.
    ///   - records: the recorded catalogs; read offline whatever `recording` says.
    public init(upstream: Upstream, store: any BlobStore, records: CatalogRecords, recording: Recording) {
        self.upstream = upstream
        self.store = store
        self.records = records
        self.recording = recording
    }

    var reference: ImageReference { upstream.reference }
    var log: NodeLog { upstream.log }

    /// The catalog of the reference for `selection`, with `policy` applied.
    /// - Throws: `ServiceError.noRecordedCatalog` offline without a record; registry errors (after the fallbacks);
    ///   whatever the policy throws.
    /// - Parameter narrow: skips images the caller cannot use for reasons of its own (another Triton version),
    ///   before the policy verifies signatures of images that would go unused.
    public func resolve(
        _ selection: ResolvedSelection, narrow: (inout Catalog) -> Void = { _ in }, policy: (any CatalogPolicy)? = nil
    ) throws -> Catalog {
        var catalog = try unverified(selection)
        narrow(&catalog)
        if let policy, try policy.applies(to: reference) {
            try policy.enforce(on: &catalog, reference: reference, client: upstream.signatureClient)
        }
        return catalog
    }

    private func unverified(_ selection: ResolvedSelection) throws -> Catalog {
        let key = selection.description
        guard let origin = upstream.origin else {
            guard let recorded = records.load(reference: reference.description, selection: key) else {
                throw ServiceError.noRecordedCatalog(reference: reference.description, selection: key)
            }
            log.info("offline: serving the digests recorded for \(reference)")
            return recorded
        }
        if let mirror = upstream.mirror, let mirrorReference = upstream.mirrorReference {
            do {
                var catalog = try ImageResolver(client: mirror.client, store: store)
                    .catalog(for: mirrorReference, accepts: selection.accepts, selectionDescription: key)
                catalog.reference = reference.description
                catalog.repository = reference.repositoryName
                record(catalog, selection: key)
                log.info("resolved \(reference) through the mirror \(mirror.host)")
                return catalog
            } catch {
                upstream.mirrorFailed("resolving \(reference)", error)
            }
        }
        do {
            let catalog = try ImageResolver(client: origin, store: store)
                .catalog(for: reference, accepts: selection.accepts, selectionDescription: key)
            record(catalog, selection: key)
            return catalog
        } catch let error as RegistryError where error.isTransient && recording == .recordAndFallBack {
            guard let recorded = records.load(reference: reference.description, selection: key) else { throw error }
            log.warning("registry unreachable (\(error)); serving the digests pinned at the last mount of \(reference)")
            return recorded
        }
    }

    private func record(_ catalog: Catalog, selection: String) {
        guard recording != .none else { return }
        do { try records.save(catalog, selection: selection) } catch {
            log.warning("cannot record the catalog of \(reference) (an offline mount will not find it): \(error)")
        }
    }
}
