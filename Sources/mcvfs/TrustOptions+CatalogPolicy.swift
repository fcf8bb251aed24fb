import BlobCache
import NodeService
import OCI
import Registry

/// The signature flags, with the cache directory whose `signatures/` keeps what they verified, as the policy every
/// resolved catalog passes.
struct SignaturePolicy: CatalogPolicy {
    let trust: TrustOptions
    let cache: CacheLayout

    func applies(to reference: ImageReference) throws -> Bool { try trust.policy(for: reference) != nil }

    func enforce(on catalog: inout Catalog, reference: ImageReference, client: RegistryClient?) throws {
        try trust.enforce(on: &catalog, reference: reference, client: client, cache: cache)
    }
}

extension TrustOptions {
    /// This policy, keeping and re-verifying signatures in `cache`.
    func catalogPolicy(_ cache: CacheLayout) -> SignaturePolicy { SignaturePolicy(trust: self, cache: cache) }
}
