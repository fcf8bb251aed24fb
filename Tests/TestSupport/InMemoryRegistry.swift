import ContentHash
import Dispatch
import Foundation
import OCI
import Registry
import Synchronization

/// The one registry fake of the unit tests, an `HTTPTransport` in memory: repositories of tags, manifests and
/// blobs answered the way CNCF distribution answers them (`Docker-Content-Digest`, `Content-Type`, byte ranges as
/// `206` with `Content-Range`, JSON errors), bodies delivered in chunks as libcurl delivers them, and every request
/// recorded. Any request is open to a fault (`inject`: a status, a reset, corrupted bytes, a gate that holds it) or
/// a script (a reply instead of the registry's own); a registry made with a `handler` answers everything through
/// it, for the client's own protocol tests (auth, redirects, truncated bodies).
///
/// Unit tests of what sits on `RegistryClient` (resolution, catalogs, fetching) use it where a real registry would
/// make them integration tests.
public final class InMemoryRegistry: HTTPTransport {
    /// A scripted answer.
    public struct Reply: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: Data
        /// Deliver this many body bytes, then fail as a dropped connection would.
        public var failAfter: Int?
        /// Announce this `Content-Length` instead of the body's real size (a truncated response).
        public var contentLength: Int?

        public init(
            _ status: Int, headers: HTTPHeaders = [:], body: Data = Data(), failAfter: Int? = nil,
            contentLength: Int? = nil
        ) {
            self.status = status
            self.headers = headers
            self.body = body
            self.failAfter = failAfter
            self.contentLength = contentLength
        }

        /// A JSON body (`Content-Type: application/json` unless `headers` names another).
        public init(_ status: Int, headers: HTTPHeaders = [:], json: String) {
            var headers = headers
            if headers["Content-Type"] == nil { headers["Content-Type"] = "application/json" }
            self.init(status, headers: headers, body: Data(json.utf8))
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

    /// Answers every request; `seen` counts earlier requests with the same method, host and path.
    public typealias Handler = @Sendable (_ request: HTTPRequest, _ seen: Int) -> Reply

    /// A blob request as the registry saw it.
    public struct Request: Sendable, Hashable {
        public var method: String
        public var path: String
        /// The blob the path names, if it names one.
        public var digest: Digest?
        /// The `Range` header's bytes, as a half-open range; nil for the whole blob or several ranges.
        public var range: Range<Int64>?
        /// Every range the `Range` header asks for (several for a multi-range request).
        public var ranges: [Range<Int64>] = []
    }

    /// What to do to a request instead of answering it plainly.
    public enum Fault: Sendable {
        /// Answer with this status and an empty body.
        case status(Int)
        /// Fail as a dropped connection does, before any byte.
        case reset
        /// Answer with every byte of the body inverted.
        case corrupt
        /// Wait until the gate opens, then answer.
        case hold(Gate)
    }

    /// Holds requests until opened; counts the requests waiting at it.
    public final class Gate: Sendable {
        private let opened = DispatchGroup()
        private let waiting = Atomic(0)

        public init() { opened.enter() }

        public func open() { opened.leave() }

        /// Requests parked here now.
        public var held: Int { waiting.load(ordering: .relaxed) }

        func pass() {
            waiting.add(1, ordering: .relaxed)
            opened.wait()
            waiting.subtract(1, ordering: .relaxed)
        }
    }

    struct Repository {
        var tags: [String: Digest] = [:]
        var manifests: [Digest: (data: Data, mediaType: String)] = [:]
        var blobs: [Digest: Data] = [:]
    }

    struct State {
        var repositories: [String: Repository] = [:]
        /// Blobs served under any repository, whatever their bytes hash to (`add(_:as:)`).
        var anyRepositoryBlobs: [Digest: Data] = [:]
        var requests: [HTTPRequest] = []
        var script: Script?
        var faults: [@Sendable (Request) -> Fault?] = []
    }

    /// `host[:port]` clients of this registry name.
    public let host: String
    private let state = Mutex(State())
    private let handler: Handler?
    /// Bytes per body callback, so bodies arrive in several chunks as they do from libcurl.
    private let chunkSize: Int

    public init(host: String = "registry.test", chunkSize: Int = 16 << 10) {
        self.host = host
        self.chunkSize = chunkSize
        handler = nil
    }

    /// A registry whose every answer comes from `handler`.
    public init(host: String = "registry.test", chunkSize: Int = 1000, handler: @escaping Handler) {
        self.host = host
        self.chunkSize = chunkSize
        self.handler = handler
    }

    /// A client of this registry: plain HTTP, no retries (a test sees every failure as it happens), no waiting.
    public func client(attempts: Int = 1) throws -> RegistryClient {
        try RegistryClient(
            registry: host, transport: self,
            options: RegistryOptions(plainHTTP: true, retry: RetryPolicy(attempts: attempts), sleep: { _ in }))
    }

    /// Serves `data` as blob `digest` under every repository from now on (whatever the bytes hash to: a corrupted
    /// registry is a test too).
    @discardableResult
    public func add(_ data: Data, as digest: Digest) -> Digest {
        state.withLock { $0.anyRepositoryBlobs[digest] = data }
        return digest
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

    /// Applies `fault` to every request it returns one for, from now on. Of the rules that answer a request, every
    /// `hold` waits in turn, then the first other fault decides the answer.
    public func inject(_ fault: @escaping @Sendable (Request) -> Fault?) {
        state.withLock { $0.faults.append(fault) }
    }

    public func clearFaults() { state.withLock { $0.faults.removeAll() } }

    /// Every request so far, in order.
    public var requests: [HTTPRequest] { state.withLock { $0.requests } }

    /// Every request so far as a blob request (method, path, digest, range), in order.
    public var blobRequests: [Request] { requests.map(Self.describe) }

    /// Requests to `host`, in order.
    public func requests(toHost host: String) -> [HTTPRequest] { requests.filter { $0.url.host == host } }

    /// Requests for byte ranges of `digest`, in arrival order.
    public func ranges(of digest: Digest) -> [Range<Int64>] {
        blobRequests.filter { $0.digest == digest }.flatMap(\.ranges)
    }

    /// Forgets the requests so far.
    public func resetLog() { state.withLock { $0.requests.removeAll() } }

    /// Paths of the requests so far (`/v2/org/cache/manifests/tag`).
    public var paths: [String] { requests.map(\.url.path) }

    // MARK: HTTPTransport

    public func send(
        _ request: HTTPRequest, head: (HTTPResponseHead) throws -> Void, body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponseHead {
        let (script, faults, seen) = state.withLock { state in
            defer { state.requests.append(request) }
            let seen = state.requests.filter {
                $0.method == request.method && $0.url.host == request.url.host && $0.url.path == request.url.path
            }.count
            return (state.script, state.faults, seen)
        }
        var answer: Reply
        if let handler {
            answer = handler(request, seen)
        } else {
            let described = Self.describe(request)
            var fault: Fault?
            for rule in faults.compactMap({ $0(described) }) {
                if case .hold(let gate) = rule { gate.pass() } else if fault == nil { fault = rule }
            }
            switch fault {
            case .status(let status): answer = Reply(status)
            case .reset: throw RegistryError.transport("\(request.url): connection reset by the in-memory registry")
            case .corrupt:
                // The blob's bytes inverted, then sliced: a multi-range body keeps its part headers.
                answer = script?(request) ?? self.answer(request, corrupt: true)
            case .hold, nil: answer = script?(request) ?? self.answer(request)
            }
        }
        var headers = answer.headers
        if headers["Content-Length"] == nil {
            headers["Content-Length"] = String(answer.contentLength ?? answer.body.count)
        }
        let response = HTTPResponseHead(status: answer.status, headers: headers, url: request.url)
        try head(response)
        guard request.method != .head else { return response }
        let bytes = answer.failAfter.map { answer.body.prefix($0) } ?? answer.body
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let end = min(offset + chunkSize, bytes.endIndex)
            try bytes[offset..<end].withUnsafeBytes { try body($0) }
            offset = end
        }
        if answer.failAfter != nil { throw RegistryError.transport("\(request.url): connection reset mid-body") }
        return response
    }

    private static func describe(_ request: HTTPRequest) -> Request {
        let path = request.url.path
        var digest: Digest?
        if let marker = path.range(of: "/blobs/") { digest = try? Digest(parsing: String(path[marker.upperBound...])) }
        var ranges: [Range<Int64>] = []
        if let header = request.headers["Range"], header.hasPrefix("bytes=") {
            for spec in header.dropFirst(6).split(separator: ",") {
                let bounds = spec.split(separator: "-").compactMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
                if bounds.count == 2 { ranges.append(bounds[0]..<(bounds[1] + 1)) }
            }
        }
        return Request(
            method: request.method.rawValue, path: path, digest: digest, range: ranges.count == 1 ? ranges[0] : nil,
            ranges: ranges)
    }

    /// What distribution answers: `/v2/`, tag lists, manifests by tag or digest, blobs (whole or by range).
    func answer(_ request: HTTPRequest, corrupt: Bool = false) -> Reply {
        let path = request.url.path
        guard path.hasPrefix("/v2/") else { return .error(404) }
        if path == "/v2/" { return Reply(200, headers: ["Content-Type": "application/json"], body: Data("{}".utf8)) }
        let rest = String(path.dropFirst("/v2/".count))
        for kind in ["/manifests/", "/blobs/", "/tags/list"] {
            guard let range = rest.range(of: kind, options: .backwards) else { continue }
            let name = String(rest[..<range.lowerBound])
            let argument = String(rest[range.upperBound...])
            let (found, anywhere) = state.withLock { ($0.repositories[name], $0.anyRepositoryBlobs) }
            if kind == "/blobs/", let digest = try? Digest(parsing: argument), let blob = anywhere[digest] {
                return Self.ranged(corrupt ? Data(blob.map { ~$0 }) : blob, request.headers["Range"])
            }
            guard let repository = found else { return .error(404, code: "NAME_UNKNOWN") }
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
                return Self.ranged(corrupt ? Data(blob.map { ~$0 }) : blob, request.headers["Range"])
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
