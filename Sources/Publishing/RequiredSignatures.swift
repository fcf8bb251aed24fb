import NodeService
import OCI
import Registry
import Trust

/// A catalog policy from a `TrustPolicy` alone: what compaction applies to the destination's own images when it
/// signs (they must carry its signature, or one the user's policy accepts), so nothing unverified already in the
/// destination is merged and signed anew.
public struct RequiredSignatures: CatalogPolicy {
    public let policy: TrustPolicy

    public init(_ policy: TrustPolicy) { self.policy = policy }

    public func applies(to reference: ImageReference) throws -> Bool { true }

    public func enforce(on catalog: inout Catalog, reference: ImageReference, client: RegistryClient?) throws {
        let verifier = ImageVerifier(policy: policy, client: client, repository: reference.repository)
        catalog.enforce(policy) { verifier.verify($0) }
    }
}
