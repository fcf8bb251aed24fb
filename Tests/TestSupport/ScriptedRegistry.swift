import Dispatch
import Foundation
import OCI
import Registry
import Synchronization

/// A registry in memory for unit tests: an `HTTPTransport` that serves blobs, and byte ranges of them
/// (`206 Partial Content` with `Content-Range`, as CNCF distribution answers), from the bytes it was given. Chosen
/// requests can fail, come back corrupted or wait at a gate; every request is recorded.
public final class ScriptedRegistry: HTTPTransport {
    /// A request as the registry saw it.
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

    public static let host = "registry.test"
    private let blobs = Mutex<[Digest: Data]>([:])
    private let log = Mutex<[Request]>([])
    private let faults = Mutex<[@Sendable (Request) -> Fault?]>([])
    /// Bytes per body callback, so bodies arrive in several chunks as they do from libcurl.
    private let chunkSize: Int

    public init(chunkSize: Int = 16 << 10) { self.chunkSize = chunkSize }

    /// Serves `data` as blob `digest` from now on (whatever the bytes hash to: a corrupted registry is a test too).
    @discardableResult
    public func add(_ data: Data, as digest: Digest) -> Digest {
        blobs.withLock { $0[digest] = data }
        return digest
    }

    /// Applies `fault` to every request it returns one for, from now on. Of the rules that answer a request, every
    /// `hold` waits in turn, then the first other fault decides the answer.
    public func inject(_ fault: @escaping @Sendable (Request) -> Fault?) {
        faults.withLock { $0.append(fault) }
    }

    public func clearFaults() { faults.withLock { $0.removeAll() } }

    /// Every request so far, in arrival order.
    public var requests: [Request] { log.withLock { $0 } }

    /// The byte ranges of `digest` asked for (each range of a multi-range request), in arrival order.
    public func ranges(of digest: Digest) -> [Range<Int64>] {
        requests.filter { $0.digest == digest }.flatMap(\.ranges)
    }

    public func resetLog() { log.withLock { $0.removeAll() } }

    /// A client of this registry that never retries (a test sees every failure as it happens) and never sleeps.
    public func client(retry: RetryPolicy = .none) throws -> RegistryClient {
        try RegistryClient(
            registry: Self.host, transport: self, options: RegistryOptions(retry: retry, sleep: { _ in }))
    }

    public func send(
        _ request: HTTPRequest, head: (HTTPResponseHead) throws -> Void, body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> HTTPResponseHead {
        let seen = Self.describe(request)
        log.withLock { $0.append(seen) }
        let applying = faults.withLock { rules in rules.compactMap { $0(seen) } }
        var fault: Fault?
        for rule in applying {
            if case .hold(let gate) = rule { gate.pass() } else if fault == nil { fault = rule }
        }
        var corrupt = false
        switch fault {
        case .status(let status):
            let response = HTTPResponseHead(status: status, headers: ["Content-Length": "0"], url: request.url)
            try head(response)
            return response
        case .reset: throw RegistryError.transport("\(request.url): connection reset by the scripted registry")
        case .corrupt: corrupt = true
        case .hold, nil: break
        }
        guard let digest = seen.digest, let blob = blobs.withLock({ $0[digest] }) else {
            let response = HTTPResponseHead(status: 404, headers: ["Content-Length": "0"], url: request.url)
            try head(response)
            return response
        }
        var payload = blob
        var headers: HTTPHeaders = [:]
        var status = 200
        if seen.ranges.count > 1 {
            // `multipart/byteranges`, as Go's `http.ServeContent` in the distribution registry answers.
            let boundary = "scripted-boundary"
            payload = Data()
            for range in seen.ranges {
                guard range.upperBound <= Int64(blob.count) else { continue }
                var part = blob.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
                if corrupt { part = Data(part.map { ~$0 }) }
                payload += Data("\r\n--\(boundary)\r\nContent-Type: application/octet-stream\r\n".utf8)
                payload += Data(
                    "Content-Range: bytes \(range.lowerBound)-\(range.upperBound - 1)/\(blob.count)\r\n\r\n".utf8)
                payload += part
            }
            payload += Data("\r\n--\(boundary)--\r\n".utf8)
            headers["Content-Type"] = "multipart/byteranges; boundary=\(boundary)"
            status = 206
            corrupt = false
        } else if let range = seen.range {
            guard range.lowerBound < Int64(blob.count) else {
                let response = HTTPResponseHead(status: 416, headers: ["Content-Length": "0"], url: request.url)
                try head(response)
                return response
            }
            let end = min(range.upperBound, Int64(blob.count))
            payload = blob.subdata(in: Int(range.lowerBound)..<Int(end))
            headers["Content-Range"] = "bytes \(range.lowerBound)-\(end - 1)/\(blob.count)"
            status = 206
        }
        if corrupt { payload = Data(payload.map { ~$0 }) }
        headers["Content-Length"] = String(payload.count)
        let response = HTTPResponseHead(status: status, headers: headers, url: request.url)
        try head(response)
        guard request.method != .head else { return response }
        var offset = payload.startIndex
        while offset < payload.endIndex {
            let end = min(offset + chunkSize, payload.endIndex)
            try payload[offset..<end].withUnsafeBytes { try body($0) }
            offset = end
        }
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
}
