import ArgumentParser
import BlobCache

/// `--cache-dir`, declared once for every command that uses the local cache.
struct CacheDirectoryOptions: ParsableArguments {
    @Option(
        help:
            "Local cache directory (default: /var/lib/mcvfs as root, else $XDG_CACHE_HOME/mcvfs; or $MCVFS_CACHE_DIR).")
    var cacheDir: String?

    /// The cache directory's layout, from `--cache-dir`, `MCVFS_CACHE_DIR` or the default. A command resolves it
    /// once and hands the value to every part.
    func layout() throws -> CacheLayout {
        guard let path = CacheDirectory.resolve(explicit: cacheDir) else {
            throw ValidationError("no cache directory: HOME is unset; pass --cache-dir or set MCVFS_CACHE_DIR")
        }
        return try CacheLayout(root: path)
    }
}
