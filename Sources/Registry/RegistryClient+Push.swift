import ContentHash
import Foundation
import OCI

extension RegistryClient {
    /// `POST /v2/<name>/blobs/uploads/`: opens an upload session.
    ///
    /// - Returns: The session's absolute `Location`, to `PUT` (or `PATCH`) to.
    public func startUpload(repository: String) throws -> URL {
        try Self.checkRepository(repository)
        let call = Call(
            method: .post, url: try url("/v2/\(repository)/blobs/uploads/"),
            body: Data(), scope: Self.scope(repository, push: true), timeouts: options.timeouts)
        let head = try perform(call)
        guard head.status == 202, let location = head.headers["Location"],
            let url = URL(string: location, relativeTo: head.url)?.absoluteURL
        else {
            throw RegistryError.invalidResponse(
                "POST \(call.url.absoluteString): HTTP \(head.status) without a Location")
        }
        return url
    }

    /// Uploads `data` as one blob (monolithic POST then `PUT <location>?digest=`), unless the registry has it.
    ///
    /// - Returns: The blob's digest.
    @discardableResult
    public func putBlob(repository: String, data: Data) throws -> Digest {
        let digest = SHA256Hasher.digest(data)
        if try blobExists(repository: repository, digest: digest) != nil { return digest }
        try commitUpload(
            location: try startUpload(repository: repository), digest: digest, body: data,
            scope: Self.scope(repository, push: true))
        return digest
    }

    /// `PUT /v2/<name>/manifests/<reference>`.
    ///
    /// - Returns: The manifest's digest (checked against `Docker-Content-Digest` when the registry sends one).
    @discardableResult
    public func putManifest(repository: String, reference: String, mediaType: String, data: Data) throws -> Digest {
        try Self.checkRepository(repository)
        let ref = try Self.parseReference(reference)
        let digest = SHA256Hasher.digest(data)
        if case .digest(let named) = ref, named != digest {
            throw RegistryError.digestMismatch(expected: named, actual: digest, size: Int64(data.count))
        }
        let call = Call(
            method: .put, url: try url("/v2/\(repository)/manifests/\(ref.path)"),
            headers: ["Content-Type": mediaType], body: data, scope: Self.scope(repository, push: true),
            timeouts: options.timeouts)
        let head = try perform(call)
        if let header = head.headers["Docker-Content-Digest"], let claimed = try? Digest(parsing: header),
            claimed != digest
        {
            throw RegistryError.digestMismatch(expected: digest, actual: claimed, size: Int64(data.count))
        }
        return digest
    }

    /// `GET /v2/`: checks the registry speaks the API and that our credentials are accepted.
    public func ping() throws {
        let call = Call(method: .get, url: try url("/v2/"), scope: nil, timeouts: options.timeouts)
        _ = try fetch(call, limit: Self.maxErrorBody)
    }
}
