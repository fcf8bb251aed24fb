import CCurl
import Foundation
import Registry

/// One libcurl easy handle. Owned by one transfer at a time (the pool hands it out and takes it back),
/// which is why it may cross threads although libcurl handles are not thread-safe.
final class EasyHandle: @unchecked Sendable {
    private let handle: UnsafeMutableRawPointer
    /// `CURLOPT_ERRORBUFFER` target; must stay valid for every transfer that uses the handle.
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)

    init() throws(RegistryError) {
        guard let handle = curl_easy_init() else { throw .transport("curl_easy_init failed") }
        self.handle = handle
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    private func set(_ option: CURLoption, _ value: Int) throws(RegistryError) {
        try check(mcvfs_curl_setopt_long(handle, option, value), "curl_easy_setopt(\(option.rawValue))")
    }

    private func set(_ option: CURLoption, _ value: String) throws(RegistryError) {
        // libcurl copies string options.
        try check(mcvfs_curl_setopt_string(handle, option, value), "curl_easy_setopt(\(option.rawValue))")
    }

    private func set(_ option: CURLoption, pointer value: UnsafeMutableRawPointer?) throws(RegistryError) {
        try check(mcvfs_curl_setopt_pointer(handle, option, value), "curl_easy_setopt(\(option.rawValue))")
    }

    /// Runs one request on this handle.
    func perform(_ request: HTTPRequest, transfer: Transfer, configuration: CurlTransport.Configuration) throws
        -> HTTPResponseHead
    {
        // Reset drops every option of the previous transfer but keeps the connection and DNS caches.
        curl_easy_reset(handle)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let what = "\(request.method.rawValue) \(request.url.absoluteString)"

        try set(CURLOPT_URL, request.url.absoluteString)
        try set(CURLOPT_PROTOCOLS_STR, "http,https")
        try set(CURLOPT_NOSIGNAL, 1)  // threads: no SIGALRM for DNS timeouts
        try set(CURLOPT_FOLLOWLOCATION, 0)
        try set(CURLOPT_TCP_KEEPALIVE, 1)
        try set(CURLOPT_HTTP_VERSION, configuration.http2 ? Int(CURL_HTTP_VERSION_2TLS) : Int(CURL_HTTP_VERSION_1_1))
        if let caFile = configuration.caFile { try set(CURLOPT_CAINFO, caFile) }
        if configuration.verbose { try set(CURLOPT_VERBOSE, 1) }
        try set(CURLOPT_ERRORBUFFER, pointer: UnsafeMutableRawPointer(errorBuffer))

        let timeouts = request.timeouts
        try set(CURLOPT_CONNECTTIMEOUT_MS, Int(max(1, timeouts.connect.roundedUpMilliseconds)))
        try set(CURLOPT_TIMEOUT_MS, Int(timeouts.total.map { max(1, $0.roundedUpMilliseconds) } ?? 0))
        // Low-speed limits bound a stalled transfer, including the wait for the response head.
        try set(CURLOPT_LOW_SPEED_LIMIT, max(1, timeouts.stallBytesPerSecond))
        try set(CURLOPT_LOW_SPEED_TIME, Int(max(1, (timeouts.stall.roundedUpMilliseconds + 999) / 1000)))

        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        func append(_ line: String) throws(RegistryError) {
            guard let list = curl_slist_append(headerList, line) else { throw .transport("curl_slist_append failed") }
            headerList = list
        }
        for (name, value) in request.headers {
            // libcurl sends "Name;" as an empty header; "Name:" would remove it.
            try append(value.isEmpty ? "\(name);" : "\(name): \(value)")
        }
        // No 100-continue round trip before uploads; registries answer PUTs directly.
        try append("Expect:")

        switch request.method {
        case .get: try set(CURLOPT_HTTPGET, 1)
        case .head: try set(CURLOPT_NOBODY, 1)
        default: try set(CURLOPT_CUSTOMREQUEST, request.method.rawValue)
        }
        let hasBody =
            request.body != nil || request.method == .post || request.method == .put || request.method == .patch
        if hasBody && request.headers["Content-Type"] == nil {
            // POSTFIELDS would otherwise label the body application/x-www-form-urlencoded.
            try append("Content-Type:")
        }
        try check(mcvfs_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList), "curl_easy_setopt(HTTPHEADER)")

        let context = Unmanaged.passUnretained(transfer).toOpaque()
        try check(mcvfs_curl_setopt_callback(handle, CURLOPT_HEADERFUNCTION, headerCallback), "HEADERFUNCTION")
        try set(CURLOPT_HEADERDATA, pointer: context)
        try check(mcvfs_curl_setopt_callback(handle, CURLOPT_WRITEFUNCTION, writeCallback), "WRITEFUNCTION")
        try set(CURLOPT_WRITEDATA, pointer: context)

        let body = request.body ?? Data()
        let code: CURLcode = try body.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) throws(RegistryError) in
            if hasBody {
                // POSTFIELDS is not copied: the bytes stay borrowed for the whole perform below.
                let empty: StaticString = ""
                let base = bytes.baseAddress ?? UnsafeRawPointer(empty.utf8Start)
                try check(
                    mcvfs_curl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(bytes.count)), "POSTFIELDSIZE"
                )
                try set(CURLOPT_POSTFIELDS, pointer: UnsafeMutableRawPointer(mutating: base))
            }
            return withExtendedLifetime(transfer) { curl_easy_perform(handle) }
        }
        // What a callback threw is the real cause; libcurl only saw "write error".
        if let error = transfer.error { throw error }
        try check(code, what, detail: String(cString: errorBuffer))

        var status = 0
        _ = mcvfs_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        if !transfer.headDelivered {
            transfer.status = status
            try transfer.deliverHead()
        }
        return transfer.responseHead
    }
}

/// Per-request state the C callbacks reach through their userdata pointer.
final class Transfer {
    let url: URL
    private var head: ((HTTPResponseHead) throws -> Void)?
    private var body: ((UnsafeRawBufferPointer) throws -> Void)?
    var status = 0
    var headers: [(name: String, value: String)] = []
    var headDelivered = false
    /// The first error a callback threw; the transfer was aborted because of it.
    var error: (any Error)?

    init(
        url: URL, head: @escaping (HTTPResponseHead) throws -> Void,
        body: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) {
        self.url = url
        self.head = head
        self.body = body
    }

    func release() {
        head = nil
        body = nil
    }

    var responseHead: HTTPResponseHead { HTTPResponseHead(status: status, headers: HTTPHeaders(headers), url: url) }

    func deliverHead() throws {
        headDelivered = true
        try head?(responseHead)
    }

    /// One raw header line, CRLF included. Returns false to abort the transfer.
    func headerLine(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard error == nil else { return false }
        if headDelivered { return true }  // trailers after a chunked body: not part of the head
        // Strip CR LF as bytes: as a String, "\r\n" is one Character and hasSuffix("\n") misses it.
        var end = bytes.count
        while end > 0, bytes[end - 1] == 0x0a || bytes[end - 1] == 0x0d { end -= 1 }
        let line = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[..<end]), as: UTF8.self)
        if line.hasPrefix("HTTP/") {
            // A new status line: an interim 1xx response ended, or this is the first line.
            let parts = line.split(separator: " ", maxSplits: 2)
            status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            headers = []
        } else if line.isEmpty {
            guard status >= 200 else { return true }  // end of a 1xx block; the real head follows
            do { try deliverHead() } catch {
                self.error = error
                return false
            }
        } else if line.first == " " || line.first == "\t", let last = headers.popLast() {
            headers.append((last.name, last.value + " " + line.trimmingCharacters(in: .whitespaces)))
        } else if let colon = line.firstIndex(of: ":") {
            headers.append(
                (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return true
    }

    /// One chunk of body. Returns false to abort the transfer.
    func bodyChunk(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard error == nil else { return false }
        do {
            if !headDelivered { try deliverHead() }
            try body?(bytes)
            return true
        } catch {
            self.error = error
            return false
        }
    }
}

/// `CURLOPT_HEADERFUNCTION`: any return other than `size * count` aborts with `CURLE_WRITE_ERROR`.
private let headerCallback: mcvfs_curl_data_callback = { data, size, count, userdata in
    guard let userdata else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    let length = size * count
    return transfer.headerLine(UnsafeRawBufferPointer(start: data, count: length)) ? length : 0
}

/// `CURLOPT_WRITEFUNCTION`: as above; 0 signals an error for any non-empty chunk.
private let writeCallback: mcvfs_curl_data_callback = { data, size, count, userdata in
    guard let userdata else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    let length = size * count
    return transfer.bodyChunk(UnsafeRawBufferPointer(start: data, count: length)) ? length : 0
}
