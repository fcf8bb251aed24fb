import ContentHash
import Foundation
import OCI

#if canImport(Glibc)
    import Glibc
#endif

/// Every path below the cache directory (`--cache-dir`), named in one place for every part that keeps something
/// there. A plain value: a process builds it once from the resolved root (`CacheDirectory.resolve`) and hands it
/// to the store, the index cache, the leases and the node service, so no two parts can disagree on a name.
///
///     blobs/sha256/<hex>           verified blobs: layers, configs, files of lazily fetched layers
///     packs/sha256/<hex>           every file of the whole layer <hex>, unpacked back to back (`PackWriter`)
///     ingest/                      temp files of downloads in progress, per-digest ingest locks
///     index/sha256/<hex>.json      persisted layer indexes (`<hex>.lock`: one builder per layer)
///     catalogs/<key>.json          the catalog a reference and GPU selection last resolved to
///     catalogs/<key>.seen.json     when this node first used each of its images (`FirstSeen`: precedence)
///     leases/<pid>.json, .lock     what running mounts and commands hold; the lock eviction takes
///     upper/<identity>/<uid>/      the writable uppers of mounts, named after what is mounted
///     signatures/                  signature artifacts verified online, re-verified during outages
///     published/<hash>.json, .lock what each upper published to each repository (`mcvfs publish`)
///     logs/                        daemon logs
///     work/<pid>-<purpose>-<uuid>/ scratch of a publish or compaction in progress, .lock held (`WorkDirectory`)
///
/// `docs/cache-directory.md` describes what each part keeps there and the locks between them.
public struct CacheLayout: Sendable, Hashable, CustomStringConvertible {
    /// The cache directory: absolute, standardized, without a trailing slash.
    public let root: String

    /// - Throws: `CacheError.invalidCacheDirectory` for a relative path. Nothing is created.
    public init(root: String) throws(CacheError) {
        let standardized = URL(fileURLWithPath: root).standardizedFileURL.path
        guard root.hasPrefix("/"), standardized.hasPrefix("/") else {
            throw .invalidCacheDirectory(path: root, reason: "not an absolute path")
        }
        self.root = standardized
    }

    public var description: String { root }

    /// Closes a directory the process owns to everyone else (0700): the cache directory holds lock files and
    /// uppers no other user may reach. Directories of earlier versions (and systemd's `StateDirectoryMode=0755`)
    /// were open; one owned by someone else is left alone.
    /// - Throws: `CacheError.io` when it cannot be inspected or changed.
    public static func restrictToOwner(_ path: String) throws(CacheError) {
        var info = stat()
        try check(lstat(path, &info), "stat", path)
        guard info.st_uid == geteuid(), info.st_mode & 0o077 != 0 else { return }
        try check(chmod(path, 0o700), "chmod 0700", path)
    }

    public var rootURL: URL { URL(fileURLWithPath: root, isDirectory: true) }

    /// Committed, verified blobs, one file per digest.
    public var blobs: String { root + "/blobs/sha256" }

    public func blob(_ digest: Digest) -> String { blobs + "/" + digest.hex }

    /// Packs: the file contents of layers unpacked whole, one file per layer, named by the layer's digest.
    public var packs: String { root + "/packs/sha256" }

    public func pack(of layer: Digest) -> String { packs + "/" + layer.hex }

    /// Temp files of blobs being written and per-digest ingest locks, on the same filesystem as `blobs`.
    public var ingest: String { root + "/ingest" }

    /// Persisted layer indexes and their build locks.
    public var indexes: String { root + "/index/sha256" }

    public func index(of layer: Digest) -> String { indexes + "/" + layer.hex + ".json" }

    public func indexLock(of layer: Digest) -> String { indexes + "/" + layer.hex + ".lock" }

    /// Recorded catalogs (what each reference resolved to), for offline remounts.
    public var catalogs: String { root + "/catalogs" }

    /// One lease per running mount or command, and `.lock`, which eviction takes exclusively.
    public var leases: String { root + "/leases" }

    /// Writable uppers, one directory per mounted reference.
    public var uppers: String { root + "/upper" }

    /// The uppers of mounts of `reference`: named after what is mounted, not where, so a remount of the same
    /// reference at another path finds the kernels compiled before. Readable, and unique by a hash of the whole.
    public func uppers(of reference: ImageReference) -> String {
        let text = reference.description
        let readable = text.map { $0.isLetter || $0.isNumber ? $0 : "_" }
        let hash = SHA256Hasher.digest(Data(text.utf8)).hex.prefix(12)
        return uppers + "/" + String(readable.prefix(80)) + "-" + hash
    }

    /// Signature artifacts (their own blob store and per-image records), kept apart from the layer cache so that
    /// evicting layers never takes the signatures of what is still cached.
    public var signatures: String { root + "/signatures" }

    /// Records of the kernels published from an upper to a repository, one per pair (and its lock).
    public var published: String { root + "/published" }

    /// Daemon logs.
    public var logs: String { root + "/logs" }

    public func log(named name: String) -> String { logs + "/" + name }

    /// Scratch directories of operations in progress, on the cache's filesystem (`WorkDirectory`).
    public var work: String { root + "/work" }
}
