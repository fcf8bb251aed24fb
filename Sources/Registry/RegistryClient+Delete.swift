import Foundation
import OCI

extension RegistryClient {
    /// How a registry answered a request to remove a tag.
    public enum TagDeletion: Sendable, Equatable {
        /// The tag is gone (or was already).
        case deleted
        /// The registry removes only manifests, by digest (CNCF distribution 2.x answers a tag `DELETE` with
        /// `400 DIGEST_INVALID`; others with `405 UNSUPPORTED`): deleting the digest removes every tag naming it.
        case unsupported
    }

    /// `DELETE /v2/<name>/manifests/<tag>` (distribution spec 1.1, "Deleting tags").
    ///
    /// - Returns: `.unsupported` when the registry deletes by digest only (a registry with deletion disabled
    ///   answers the same way here; `deleteManifest` then says so).
    /// - Throws: `RegistryError` for other refusals (`.unauthorized` without delete permission).
    public func deleteTag(repository: String, tag: String) throws -> TagDeletion {
        guard case .tag = try Self.parseReference(tag) else {
            throw RegistryError.invalidArgument("'\(tag)' is a digest, not a tag")
        }
        do {
            try delete(repository: repository, reference: tag)
            return .deleted
        } catch RegistryError.notFound {
            return .deleted
        } catch RegistryError.registry(let status, _) where status == 400 || status == 405 {
            return .unsupported
        }
    }

    /// `DELETE /v2/<name>/manifests/<digest>`: the manifest and every tag naming it. Its blobs stay until the
    /// registry's garbage collection; a manifest already gone counts as deleted.
    ///
    /// - Throws: `RegistryError.registry(status: 405, …)` where deletion is disabled (distribution:
    ///   `storage.delete.enabled: false`), `.unauthorized` without delete permission.
    public func deleteManifest(repository: String, digest: Digest) throws {
        do { try delete(repository: repository, reference: digest.description) } catch RegistryError.notFound {}
    }

    private func delete(repository: String, reference: String) throws {
        try Self.checkRepository(repository)
        let ref = try Self.parseReference(reference)
        // distribution's token auth asks for the `delete` action on DELETE (pull and push do not grant it).
        let call = Call(
            method: .delete, url: try url("/v2/\(repository)/manifests/\(ref.path)"),
            headers: ["Accept": MediaType.manifestAccept.joined(separator: ", ")],
            scope: "repository:\(repository):delete", timeouts: options.timeouts)
        _ = try perform(call)
    }
}
