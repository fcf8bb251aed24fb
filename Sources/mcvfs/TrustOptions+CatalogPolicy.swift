import BlobCache
import NodeService
import OCI
import Registry
import Trust

/// The signature flags, with the cache directory whose `signatures/` keeps what they verified, as the policy every
/// resolved catalog passes.
struct SignaturePolicy: CatalogPolicy {
    let trust: TrustOptions
    let cache: CacheLayout
    /// Signers trusted besides the flags': a compaction trusts the images its own key signed.
    var alsoAccepting: TrustPolicy?

    func applies(to reference: ImageReference) throws -> Bool {
        try alsoAccepting != nil || trust.policy(for: reference) != nil
    }

    func enforce(on catalog: inout Catalog, reference: ImageReference, client: RegistryClient?) throws {
        try trust.enforce(
            on: &catalog, reference: reference, client: client, cache: cache, alsoAccepting: alsoAccepting)
    }
}

extension TrustOptions {
    /// This policy, keeping and re-verifying signatures in `cache`.
    /// - Parameter alsoAccepting: signers trusted besides the flags'.
    func catalogPolicy(_ cache: CacheLayout, alsoAccepting: TrustPolicy? = nil) -> SignaturePolicy {
        SignaturePolicy(trust: self, cache: cache, alsoAccepting: alsoAccepting)
    }
}
