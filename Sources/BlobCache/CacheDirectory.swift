import Foundation

/// Where the blob cache lives when nobody says: `--cache-dir` beats `MCVFS_CACHE_DIR`, which beats the default
/// (`/var/lib/mcvfs` for root, else `$XDG_CACHE_HOME/mcvfs`, else `$HOME/.cache/mcvfs`).
public enum CacheDirectory {
    public static let environmentVariable = "MCVFS_CACHE_DIR"
    public static let systemDefault = "/var/lib/mcvfs"

    /// Resolves the cache directory; pure, so every input is a parameter.
    /// - Parameters:
    ///   - explicit: the `--cache-dir` value, if given.
    ///   - environment: the process environment (`MCVFS_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME`).
    ///   - uid: the effective user id; 0 selects the system location.
    ///   - homeDirectory: the user's home from the password database, used when `HOME` is unset.
    /// - Returns: an absolute path; nil only when no rule yields one (no HOME for a non-root user).
    ///   Relative `--cache-dir`/`MCVFS_CACHE_DIR` values are made absolute against `currentDirectory`;
    ///   a relative `XDG_CACHE_HOME` is ignored, as the XDG base-directory spec requires.
    public static func resolve(
        explicit: String?, environment: [String: String], uid: UInt32, homeDirectory: String? = nil,
        currentDirectory: String = FileManager.default.currentDirectoryPath
    ) -> String? {
        func absolute(_ path: String) -> String {
            path.hasPrefix("/") ? path : (currentDirectory as NSString).appendingPathComponent(path)
        }
        if let explicit, !explicit.isEmpty { return absolute(explicit) }
        if let fromEnvironment = environment[environmentVariable], !fromEnvironment.isEmpty {
            return absolute(fromEnvironment)
        }
        if uid == 0 { return systemDefault }
        if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") {
            return (xdg as NSString).appendingPathComponent("mcvfs")
        }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? homeDirectory
        guard let home, home.hasPrefix("/") else { return nil }
        return (home as NSString).appendingPathComponent(".cache/mcvfs")
    }

    /// `resolve` with this process's environment and effective uid.
    public static func resolve(explicit: String?) -> String? {
        resolve(
            explicit: explicit, environment: ProcessInfo.processInfo.environment, uid: geteuid(),
            homeDirectory: NSHomeDirectory())
    }
}
