import ContentHash
import Foundation
import OCI

/// A manifest as the registry served it, with the digest its bytes hash to.
public struct FetchedManifest: Sendable, Equatable {
    /// sha256 of `data`: verified against the requested digest, or against `Docker-Content-Digest` for a tag.
    public var digest: Digest
    /// `Content-Type` without parameters, else the document's own `mediaType`.
    public var mediaType: String
    /// The exact bytes; re-serialising would change the digest.
    public var data: Data
    public var document: ManifestDocument

    public init(digest: Digest, mediaType: String, data: Data, document: ManifestDocument) {
        self.digest = digest
        self.mediaType = mediaType
        self.data = data
        self.document = document
    }

    /// A descriptor of this manifest, as an index would list it.
    public var descriptor: Descriptor { Descriptor(mediaType: mediaType, digest: digest, size: Int64(data.count)) }
}

/// What a `HEAD` on a manifest tells: enough to see whether a tag moved without downloading it.
public struct ManifestHead: Sendable, Equatable {
    /// From `Docker-Content-Digest`, or the requested digest; `nil` when a tag's response lacks the header.
    public var digest: Digest?
    public var mediaType: String?
    public var size: Int64?
}

extension RegistryClient {
    /// `GET /v2/<name>/manifests/<reference>` (distribution spec, "Pulling manifests").
    ///
    /// - Parameters:
    ///   - repository: Repository inside this registry (`org/cache`).
    ///   - reference: A tag or `sha256:<hex>`.
    ///   - limit: a smaller bound than `maxManifestSize` for this manifest, enforced while it streams.
    /// - Returns: The bytes, their digest and the parsed document.
    /// - Throws: `RegistryError.digestMismatch` when the bytes do not hash to the requested digest or to the
    ///   registry's `Docker-Content-Digest`; `.tooLarge` above `limit` or `maxManifestSize`; `.invalidResponse`
    ///   when the document does not parse; `.notFound`, `.unauthorized`, ... from the registry.
    public func getManifest(repository: String, reference: String, limit: Int? = nil) throws -> FetchedManifest {
        try Self.checkRepository(repository)
        let ref = try Self.parseReference(reference)
        let call = Call(
            method: .get, url: try url("/v2/\(repository)/manifests/\(ref.path)"),
            headers: ["Accept": MediaType.manifestAccept.joined(separator: ", ")],
            scope: Self.scope(repository), timeouts: options.timeouts)
        let response = try fetch(call, limit: min(limit ?? options.maxManifestSize, options.maxManifestSize))
        let actual = SHA256Hasher.digest(response.body)
        let size = Int64(response.body.count)
        switch ref {
        case .digest(let expected):
            guard actual == expected else {
                throw RegistryError.digestMismatch(expected: expected, actual: actual, size: size)
            }
        case .tag:
            if let header = response.head.headers["Docker-Content-Digest"] {
                guard let claimed = try? Digest(parsing: header.trimmingCharacters(in: .whitespaces)) else {
                    throw RegistryError.invalidResponse(
                        "\(repository):\(reference): Docker-Content-Digest '\(header)' is not a sha256 digest")
                }
                guard claimed == actual else {
                    throw RegistryError.digestMismatch(expected: claimed, actual: actual, size: size)
                }
            }
        }
        let document: ManifestDocument
        do {
            document = try ManifestDocument(parsing: response.body, contentType: response.head.contentType)
        } catch {
            throw RegistryError.invalidResponse("\(registry)/\(repository)@\(actual): \(error)")
        }
        let mediaType =
            response.head.contentType.flatMap { MediaType.isManifest($0) || MediaType.isIndex($0) ? $0 : nil }
            ?? document.mediaType
        return FetchedManifest(digest: actual, mediaType: mediaType, data: response.body, document: document)
    }

    /// `HEAD /v2/<name>/manifests/<reference>`.
    ///
    /// - Throws: `RegistryError.notFound` when there is no such manifest.
    public func headManifest(repository: String, reference: String) throws -> ManifestHead {
        try Self.checkRepository(repository)
        let ref = try Self.parseReference(reference)
        let call = Call(
            method: .head, url: try url("/v2/\(repository)/manifests/\(ref.path)"),
            headers: ["Accept": MediaType.manifestAccept.joined(separator: ", ")],
            scope: Self.scope(repository), timeouts: options.timeouts)
        let head = try perform(call)
        var digest: Digest?
        if case .digest(let requested) = ref { digest = requested }
        if let header = head.headers["Docker-Content-Digest"], let claimed = try? Digest(parsing: header) {
            if let requested = digest, requested != claimed {
                throw RegistryError.invalidResponse(
                    "\(repository)@\(requested): HEAD answered Docker-Content-Digest \(claimed)")
            }
            digest = claimed
        }
        return ManifestHead(digest: digest, mediaType: head.contentType, size: head.contentLength)
    }
}

extension ManifestDocument {
    /// The media type the document declares, or the one its shape implies.
    var mediaType: String {
        switch self {
        case .manifest(let manifest): return manifest.mediaType ?? MediaType.ociManifest
        case .index(let index): return index.mediaType ?? MediaType.ociIndex
        }
    }
}
