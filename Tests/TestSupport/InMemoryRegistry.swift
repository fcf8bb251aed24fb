import ContentHash
import Foundation
import OCI
import Registry
import Synchronization

/// A registry in memory, as an `HTTPTransport`: repositories of tags, manifests and blobs answered the way CNCF
/// distribution answers them (`Docker-Content-Digest`, `Content-Type`, byte ranges, JSON errors), with every
/// request recorded and any request open to a script (a fault, a stall, a wrong body) instead.
///
/// Unit tests of what sits on `RegistryClient` (resolution, catalogs, fetching) use it where a real registry would
/// make them integration tests.
public final class InMemoryRegistry: HTTPTransport {
    /// A scripted answer.
    public struct Reply: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: Data

        public init(_ status: Int, headers: HTTPHeaders = [:], body: Data = Data()) {
            self.status = status
            self.headers = headers
            self.body = body
        }

        /// The registry's JSON error document.
        public static func error(_ status: Int, code: String = "UNKNOWN") -> Reply {
            Reply(
                status, headers: ["Content-Type": "application/json"],
                body: Data(#"{"errors":[{"code":"\#(code)","message":"scripted"}]}"#.utf8))
        }
    }

    /// Returns a reply to send instead of the registry's own, or nil to let the registry answer.
    public typealias Script = @Sendable (HTTPRequest) -> Reply?

    struct Repository {
        var tags: [String: Digest] = [:]
        var manifests: [Digest: (data: Data, mediaType: String)] = [:]
        var blobs: [Digest: Data] = [:]
    }

    struct State {
        var repositories: [String: Repository] = [:]
        var requests: [HTTPRequest] = []
        var script: Script?
    }

    /// `host[:port]` clients of this registry name.
    public let host: String
    private let state = Mutex(State())

    public init(host: String = "registry.test") {
        self.host = host
    }

    /// A client of this registry: plain HTTP, no retries, no waiting.
    public func client(attempts: Int = 1) throws -> RegistryClient {
        try RegistryClient(
            registry: host, transport: self,
            options: RegistryOptions(plainHTTP: true, retry: RetryPolicy(attempts: attempts), sleep: { _ in }))
    }

    // MARK: Content

    /// Stores a blob; returns its descriptor.
    @discardableResult
    public func putBlob(_ data: Data, repository: String, mediaType: String = "application/octet-stream")
        -> Descriptor
    {
        let digest = SHA256Hasher.digest(data)
        state.withLock { $0.repositories[repository, default: Repository()].blobs[digest] = data }
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(data.count))
    }

    /// Stores a manifest (any document), under `tag` too when given; returns its descriptor.
    @discardableResult
    public func putManifest(_ data: Data, mediaType: String, repository: String, tag: String? = nil) -> Descriptor {
        let digest = SHA256Hasher.digest(data)
        state.withLock {
            $0.repositories[repository, default: Repository()].manifests[digest] = (data, mediaType)
            if let tag { $0.repositories[repository, default: Repository()].tags[tag] = digest }
        }
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(data.count))
    }

    /// Pushes an OCI image: a config carrying `labels`, the layers as given, the manifest under `tag`.
    @discardableResult
    public func pushImage(
        repository: String, tag: String?, labels: [String: String], layers: [(data: Data, mediaType: String)],
        layerAnnotations: [String: String]? = nil
    ) throws -> Descriptor {
        let config = try JSONSerialization.data(
            withJSONObject: [
                "architecture": "amd64", "os": "linux", "config": ["Labels": labels],
                "rootfs": ["type": "layers", "diff_ids": [String]()],
            ], options: [.sortedKeys])
        let configDescriptor = putBlob(config, repository: repository, mediaType: MediaType.ociConfig)
        var layerDocuments: [[String: Any]] = []
        for layer in layers {
            let descriptor = putBlob(layer.data, repository: repository, mediaType: layer.mediaType)
            var document: [String: Any] = [
                "mediaType": layer.mediaType, "digest": descriptor.digest.description, "size": descriptor.size,
            ]
            if let layerAnnotations { document["annotations"] = layerAnnotations }
            layerDocuments.append(document)
        }
        let manifest = try JSONSerialization.data(
            withJSONObject: [
                "schemaVersion": 2, "mediaType": MediaType.ociManifest,
                "config": [
                    "mediaType": MediaType.ociConfig, "digest": configDescriptor.digest.description,
                    "size": configDescriptor.size,
                ],
                "layers": layerDocuments,
            ], options: [.sortedKeys])
        return putManifest(manifest, mediaType: MediaType.ociManifest, repository: repository, tag: tag)
    }

    /// Removes a blob (a registry that lost it, or garbage-collected it).
    public func deleteBlob(_ digest: Digest, repository: String) {
        state.withLock { _ = $0.repositories[repository]?.blobs.removeValue(forKey: digest) }
    }

    // MARK: Scripting and records

    /// Replaces the script (nil: the registry answers everything).
    public func script(_ script: Script?) {
        state.withLock { $0.script = script }
    }

    /// Every request so far, in order.
    public var requests: [HTTPRequest] { state.withLock { $0.requests } }

    /// Paths of the requests so far (`/v2/org/cache/manifests/tag`).
    public var paths: [String] { requests.map(\.url.path) }

    // MARK: HTTPTransport

    public func send(
        _ request: HTTPRequest, head: (HTTPResponseHead) throws -> Void, body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponseHead {
        let script = state.withLock { state -> Script? in
            state.requests.append(request)
            return state.script
        }
        let answer = script?(request) ?? answer(request)
        var headers = answer.headers
        if headers["Content-Length"] == nil { headers["Content-Length"] = String(answer.body.count) }
        let response = HTTPResponseHead(status: answer.status, headers: headers, url: request.url)
        try head(response)
        if request.method != .head, !answer.body.isEmpty {
            try answer.body.withUnsafeBytes { try body($0) }
        }
        return response
    }

    /// What distribution answers: `/v2/`, tag lists, manifests by tag or digest, blobs (whole or by range).
    func answer(_ request: HTTPRequest) -> Reply {
        let path = request.url.path
        guard path.hasPrefix("/v2/") else { return .error(404) }
        if path == "/v2/" { return Reply(200, headers: ["Content-Type": "application/json"], body: Data("{}".utf8)) }
        let rest = String(path.dropFirst("/v2/".count))
        for kind in ["/manifests/", "/blobs/", "/tags/list"] {
            guard let range = rest.range(of: kind, options: .backwards) else { continue }
            let name = String(rest[..<range.lowerBound])
            let argument = String(rest[range.upperBound...])
            guard let repository = state.withLock({ $0.repositories[name] }) else {
                return .error(404, code: "NAME_UNKNOWN")
            }
            switch kind {
            case "/tags/list":
                let tags = repository.tags.keys.sorted()
                let body = try? JSONSerialization.data(withJSONObject: ["name": name, "tags": tags])
                return Reply(200, headers: ["Content-Type": "application/json"], body: body ?? Data())
            case "/manifests/":
                let digest = (try? Digest(parsing: argument)) ?? repository.tags[argument]
                guard let digest, let manifest = repository.manifests[digest] else {
                    return .error(404, code: "MANIFEST_UNKNOWN")
                }
                return Reply(
                    200, headers: ["Content-Type": manifest.mediaType, "Docker-Content-Digest": digest.description],
                    body: manifest.data)
            default:
                guard let digest = try? Digest(parsing: argument), let blob = repository.blobs[digest] else {
                    return .error(404, code: "BLOB_UNKNOWN")
                }
                return Self.ranged(blob, request.headers["Range"])
            }
        }
        return .error(404)
    }

    /// `Range: bytes=a-b` answered with 206 and that slice, several ranges with a `multipart/byteranges` body (as Go's
    /// `http.ServeContent` in the distribution registry answers); anything else gets the whole blob.
    static func ranged(_ blob: Data, _ range: String?) -> Reply {
        guard let range, range.hasPrefix("bytes=") else { return Reply(200, body: blob) }
        let specs = range.dropFirst("bytes=".count).split(separator: ",")
        if specs.count > 1 {
            let boundary = "mcvfs-test-boundary"
            var body = Data()
            for spec in specs {
                let part = ranged(blob, "bytes=" + spec.trimmingCharacters(in: .whitespaces))
                guard part.status == 206 else { return part }
                body += Data("\r\n--\(boundary)\r\nContent-Type: application/octet-stream\r\n".utf8)
                body += Data("Content-Range: \(part.headers["Content-Range"]!)\r\n\r\n".utf8) + part.body
            }
            body += Data("\r\n--\(boundary)--\r\n".utf8)
            return Reply(206, headers: ["Content-Type": "multipart/byteranges; boundary=\(boundary)"], body: body)
        }
        let bounds = range.dropFirst("bytes=".count).split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count == 2, let first = Int(bounds[0]), first < blob.count else {
            return Reply(416, headers: ["Content-Range": "bytes */\(blob.count)"])
        }
        let last = min(Int(bounds[1]) ?? (blob.count - 1), blob.count - 1)
        return Reply(
            206, headers: ["Content-Range": "bytes \(first)-\(last)/\(blob.count)"],
            body: blob.subdata(in: first..<(last + 1)))
    }
}
