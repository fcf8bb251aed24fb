import Foundation
import OCI

extension RegistryClient {
    /// The manifests whose `subject` is `digest`: `GET /v2/<name>/referrers/<digest>` (OCI distribution spec 1.1,
    /// "Listing Referrers"), or, when the registry does not implement that API (404), the referrers tag schema's
    /// index at tag `sha256-<hex>` (what cosign v3 and oras push to such registries).
    ///
    /// The list itself is not content-addressed: a caller trusts only what it fetches by a listed digest.
    /// - Parameters:
    ///   - artifactType: keep only descriptors of this artifact type (also sent as the `artifactType` filter).
    /// - Returns: The descriptors, in the registry's order; empty when there are none.
    /// - Throws: `RegistryError` other than a 404 of the fallback tag.
    public func referrers(repository: String, digest: Digest, artifactType: String? = nil) throws -> [Descriptor] {
        try Self.checkRepository(repository)
        var query: [URLQueryItem] = []
        if let artifactType { query.append(URLQueryItem(name: "artifactType", value: artifactType)) }
        let call = Call(
            method: .get, url: try url("/v2/\(repository)/referrers/\(digest)", query: query),
            headers: ["Accept": MediaType.ociIndex], scope: Self.scope(repository), timeouts: options.timeouts)
        let manifests: [Descriptor]
        do {
            let response = try fetch(call, limit: options.maxManifestSize)
            do {
                manifests = try JSONDecoder().decode(Index.self, from: response.body).manifests
            } catch {
                throw RegistryError.invalidResponse("GET \(call.url.absoluteString): not an image index: \(error)")
            }
        } catch RegistryError.notFound {
            manifests = try referrersFromFallbackTag(repository: repository, digest: digest)
        }
        guard let artifactType else { return manifests }
        // A registry may ignore the filter (it then omits the OCI-Filters-Applied header): filter again here.
        return manifests.filter { $0.artifactType == artifactType }
    }

    /// The index at tag `sha256-<hex>`, or none.
    private func referrersFromFallbackTag(repository: String, digest: Digest) throws -> [Descriptor] {
        let fetched: FetchedManifest
        do {
            fetched = try getManifest(repository: repository, reference: Self.referrersTag(for: digest))
        } catch RegistryError.notFound {
            return []
        }
        guard case .index(let index) = fetched.document else {
            throw RegistryError.invalidResponse(
                "\(registry)/\(repository):\(Self.referrersTag(for: digest)) is not an image index")
        }
        return index.manifests
    }

    /// The referrers tag schema's tag for `digest`: `<alg>-<hex>`.
    public static func referrersTag(for digest: Digest) -> String { "sha256-\(digest.hex)" }
}
