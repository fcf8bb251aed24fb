import Foundation

/// Rewrites Triton's `__grp__<name>.json` so its `child_paths` name where each child lives for the consuming
/// process. Triton 3.x stores absolute paths of the machine that compiled, and misses (recompiles) when they do
/// not exist; see docs/relocation.md for the rule, which PyTorch's TritonBundler applies too.
public enum GroupRelocation {
    /// True for the file names Triton uses for group files.
    public static func isGroupFile(_ name: String) -> Bool {
        name.hasPrefix("__grp__") && name.hasSuffix(".json")
    }

    /// Returns the rewritten document, or nil when there is nothing to rewrite (unparseable, list-form
    /// `child_paths` of Triton 2.x, or paths that do not follow the `<KEY>/<name>` rule are left alone).
    /// - Parameters:
    ///   - data: the group file as stored in the image.
    ///   - directory: the group file's directory relative to the cache root (`<KEY>` for a Triton cache).
    ///   - root: the cache root as the consuming process sees it (the mountpoint, or what `--consumer-root` says).
    public static func rewrite(_ data: Data, directory: String, root: String) -> Data? {
        guard var document = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
            let children = document["child_paths"] as? [String: Any]
        else { return nil }
        let key = directory.split(separator: "/").last.map(String.init) ?? directory
        let base = root.hasSuffix("/") ? String(root.dropLast()) : root
        var rewritten = children
        var changed = false
        for (name, value) in children {
            // Pure string work: these paths may lie under this very mount, and touching them from the daemon
            // (as URL(fileURLWithPath:) does, with a stat) would deadlock against the request being served.
            guard let old = value as? String else { continue }
            let components = old.split(separator: "/", omittingEmptySubsequences: true)
            guard components.count >= 2, components[components.count - 1] == name,
                components[components.count - 2] == key
            else { continue }
            let new = "\(base)/\(directory)/\(name)"
            if new != old {
                rewritten[name] = new
                changed = true
            }
        }
        guard changed else { return nil }
        document["child_paths"] = rewritten
        return try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])
    }
}
