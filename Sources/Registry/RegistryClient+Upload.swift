import Foundation
import OCI

extension RegistryClient {
    /// Uploads a blob whose digest and size the caller already knows (a layer file hashed while written), reading
    /// its bytes through `read` so a large layer never has to be held in memory.
    ///
    /// Blobs up to `chunkSize` go in one `PUT <location>?digest=` (monolithic upload); larger ones as a sequence of
    /// `PATCH <location>` requests of `chunkSize` bytes with `Content-Range`, each answered by the next `Location`,
    /// then an empty `PUT ...?digest=` that commits (distribution spec, "Pushing a blob in chunks"). The registry
    /// checks the digest on commit, so a reader that returns other bytes than were hashed fails there.
    ///
    /// - Parameters:
    ///   - read: Returns `count` bytes at `offset`; fewer only past the end (an error then).
    ///   - progress: Called with the bytes sent so far after each request body.
    /// - Returns: false when the registry already had the blob (nothing sent), true when it was uploaded.
    /// - Throws: `RegistryError` (`.unauthorized` when the registry refuses pushes), or whatever `read` threw.
    @discardableResult
    public func uploadBlob(
        repository: String, digest: Digest, size: Int64, chunkSize: Int = 16 << 20,
        read: (_ offset: Int64, _ count: Int) throws -> Data,
        progress: (Int64) -> Void = { _ in }
    ) throws -> Bool {
        precondition(chunkSize > 0, "chunk size must be positive")
        if let existing = try blobExists(repository: repository, digest: digest), existing == size { return false }
        var location = try startUpload(repository: repository)
        let scope = Self.scope(repository, push: true)
        if size > Int64(chunkSize) {
            var offset: Int64 = 0
            while offset < size {
                let count = Int(min(Int64(chunkSize), size - offset))
                let chunk = try read(offset, count)
                guard chunk.count == count else {
                    throw RegistryError.invalidArgument(
                        "blob \(digest.short): \(chunk.count) bytes at \(offset), expected \(count)")
                }
                let call = Call(
                    method: .patch, url: location,
                    headers: [
                        "Content-Type": "application/octet-stream",
                        "Content-Range": "\(offset)-\(offset + Int64(count) - 1)",
                    ],
                    body: chunk, scope: scope, timeouts: options.streamingTimeouts)
                let head = try perform(call)
                guard head.status == 202 || head.status == 204, let next = head.headers["Location"],
                    let url = URL(string: next, relativeTo: head.url)?.absoluteURL
                else {
                    throw RegistryError.invalidResponse(
                        "PATCH \(location.absoluteString): HTTP \(head.status) without a Location")
                }
                location = url
                offset += Int64(count)
                progress(offset)
            }
            try commitUpload(location: location, digest: digest, body: Data(), scope: scope)
        } else {
            let data = try read(0, Int(size))
            guard data.count == Int(size) else {
                throw RegistryError.invalidArgument("blob \(digest.short): read \(data.count) of \(size) bytes")
            }
            try commitUpload(location: location, digest: digest, body: data, scope: scope)
            progress(size)
        }
        return true
    }

    /// Uploads the file at `path` (of known digest and size) with `uploadBlob`, reading one chunk at a time.
    @discardableResult
    public func uploadBlob(
        repository: String, digest: Digest, size: Int64, fileAt path: String, chunkSize: Int = 16 << 20,
        progress: (Int64) -> Void = { _ in }
    ) throws -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw RegistryError.invalidArgument("cannot open \(path) for reading")
        }
        defer { try? handle.close() }
        return try uploadBlob(
            repository: repository, digest: digest, size: size, chunkSize: chunkSize,
            read: { offset, count in
                try handle.seek(toOffset: UInt64(offset))
                return try handle.read(upToCount: count) ?? Data()
            }, progress: progress)
    }

    /// `PUT <location>&digest=<digest>`: the last request of an upload, with the remaining bytes (or none).
    func commitUpload(location: URL, digest: Digest, body: Data, scope: String) throws {
        guard var components = URLComponents(url: location, resolvingAgainstBaseURL: false) else {
            throw RegistryError.invalidResponse("upload location \(location) is not a URL")
        }
        components.queryItems =
            (components.queryItems ?? []) + [URLQueryItem(name: "digest", value: digest.description)]
        guard let target = components.url else { throw RegistryError.invalidResponse("upload location \(location)") }
        let call = Call(
            method: .put, url: target, headers: ["Content-Type": "application/octet-stream"], body: body,
            scope: scope, timeouts: options.streamingTimeouts)
        let head = try perform(call)
        guard head.status == 201 || head.status == 204 else {
            throw RegistryError.invalidResponse("PUT \(target.absoluteString): HTTP \(head.status), expected 201")
        }
    }
}
