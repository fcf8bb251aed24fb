import Foundation
import OCI
import Registry

/// Where signature artifacts are read from: the registry, or what a previous verification stored locally. Every
/// manifest and blob a source returns has been checked against its digest.
public protocol SignatureSource: Sendable {
    /// The manifest at `reference` (a tag or `sha256:<hex>`) if it has at most `limit` bytes; `nil` when there is
    /// none.
    /// - Throws: `RegistryError` (transient ones mean "cannot be asked now"; `tooLarge` past `limit`, found while
    ///   it streams), or why a stored copy is unusable.
    func manifest(_ reference: String, limit: Int) throws -> FetchedManifest?
    /// The blob `digest`, if it has at most `limit` bytes (checked before or while it is read, never after).
    func blob(_ digest: Digest, limit: Int) throws -> Data
    /// The manifests whose subject is `digest` (OCI referrers).
    func referrers(of digest: Digest) throws -> [Descriptor]
}

/// The registry itself.
public struct RegistrySignatureSource: SignatureSource {
    private let client: RegistryClient
    private let repository: String

    public init(client: RegistryClient, repository: String) {
        self.client = client
        self.repository = repository
    }

    public func manifest(_ reference: String, limit: Int) throws -> FetchedManifest? {
        do {
            return try client.getManifest(repository: repository, reference: reference, limit: limit)
        } catch RegistryError.notFound {
            return nil
        }
    }

    public func blob(_ digest: Digest, limit: Int) throws -> Data {
        try client.getBlob(repository: repository, digest: digest, limit: limit)
    }

    public func referrers(of digest: Digest) throws -> [Descriptor] {
        try client.referrers(repository: repository, digest: digest)
    }
}

extension Error {
    /// The source could not be asked at all (a registry down or stalling): the caller may fall back to stored
    /// signatures. Anything else is an answer, and a bad answer is a reason to refuse, never to fall back.
    var isUnreachable: Bool { (self as? RegistryError)?.isTransient == true }
}
