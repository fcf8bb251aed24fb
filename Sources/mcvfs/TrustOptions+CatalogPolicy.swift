import NodeService
import OCI

/// The signature flags are the policy every resolved catalog passes (`enforce(on:reference:client:)`).
extension TrustOptions: CatalogPolicy {
    func applies(to reference: ImageReference) throws -> Bool { try policy(for: reference) != nil }
}
