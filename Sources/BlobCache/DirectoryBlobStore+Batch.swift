import ContentHash
import Foundation
import OCI

#if canImport(Glibc)
    import Glibc
#endif

extension DirectoryBlobStore {
    /// Commits many small blobs, each verified against its expected digest, with one file-system sync for all of
    /// them instead of two `fsync`s each (a lazily fetched kernel directory or a layer's metadata is hundreds of
    /// small files, and per-file syncs cost more than the fetch). The crash-safe order is kept for the batch:
    /// every temp file is written, then `syncfs` makes them durable, then each is renamed into `blobs/sha256/`,
    /// then that directory is synced once.
    ///
    /// - Returns: for each expected digest, its path or the reason it was not committed (digest mismatch, I/O).
    ///   One blob failing does not stop the others.
    public func commitBatch(_ blobs: [(expected: Digest, data: Data)]) -> [Digest: Result<String, CacheError>] {
        var results: [Digest: Result<String, CacheError>] = [:]
        var pending: [(digest: Digest, fd: Int32, temp: String)] = []
        defer {
            // Temps not renamed are removed while still locked; renamed ones no longer exist under that name.
            for item in pending {
                unlink(item.temp)
                close(item.fd)
            }
        }
        for (expected, data) in blobs where results[expected] == nil {
            if let path = path(for: expected) {
                results[expected] = .success(path)
                continue
            }
            let actual = SHA256Hasher.digest(data)
            guard actual == expected else {
                results[expected] = .failure(
                    .digestMismatch(expected: expected, actual: actual, size: Int64(data.count)))
                continue
            }
            let fd: Int32
            let temp: String
            do { (fd, temp) = try createTemp(label: expected.hex) } catch {
                results[expected] = .failure(error)
                continue
            }
            do {
                try data.withUnsafeBytes { try writeAll(fd, $0, path: temp) }
                try check(fchmod(fd, 0o444), "fchmod", temp)
                pending.append((expected, fd, temp))
                results[expected] = .failure(.io(operation: "commit", path: temp, errno: 0))  // until renamed
            } catch {
                unlink(temp)
                close(fd)
                results[expected] = .failure(error as? CacheError ?? .io(operation: "write", path: temp, errno: EIO))
            }
        }
        guard let first = pending.first else { return results }
        if linuxSyncfs(first.fd) != 0 {
            let error = CacheError.io(operation: "syncfs", path: ingestDirectory, errno: errno)
            for item in pending { results[item.digest] = .failure(error) }
            return results
        }
        for item in pending {
            let final = blobPath(item.digest)
            if access(final, F_OK) == 0 || rename(item.temp, final) == 0 {
                results[item.digest] = .success(final)
            } else {
                results[item.digest] = .failure(.io(operation: "rename", path: item.temp, errno: errno))
            }
        }
        do { try syncDirectory(blobsDirectory) } catch {
            for item in pending { results[item.digest] = .failure(error) }
        }
        return results
    }
}

/// `syncfs(2)`: flushes the file system holding `fd`. Glibc's Swift overlay does not export it, so it is looked up
/// once; without it (not Linux) every file is synced the slow way by `sync()`.
private func linuxSyncfs(_ fd: Int32) -> Int32 {
    guard let syncfs = syncfsFunction else {
        sync()
        return 0
    }
    return syncfs(fd)
}

private let syncfsFunction: (@convention(c) (Int32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "syncfs") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int32) -> Int32).self)
}()
