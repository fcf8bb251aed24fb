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
    /// `child_paths` of Triton 2.x, or paths that do not follow the `<KEY>/<name>` rule are left alone) or when the
    /// result would exceed `Relocation.outputLimit(forInput:)`.
    /// - Parameters:
    ///   - data: the group file as stored in the image.
    ///   - directory: the group file's directory relative to the cache root (`<KEY>` for a Triton cache).
    ///   - root: the cache root as the consuming process sees it (the mountpoint, or what `--consumer-root` says).
    public static func rewrite(_ data: Data, directory: String, root: String) -> Data? {
        let limit = Relocation.outputLimit(forInput: data.count)
        guard case .rewritten(let rewritten) = relocate(data, directory: directory, root: root, limit: limit) else {
            return nil
        }
        return rewritten
    }

    /// Relocates like `rewrite`, producing at most `limit` bytes: each new path is `<root>/<directory>/<name>`, and
    /// the user who wrote the file chose the directory's depth, so the size is counted before any path is made.
    static func relocate(_ data: Data, directory: String, root: String, limit: Int) -> Relocation.Outcome {
        guard var document = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
            let children = document["child_paths"] as? [String: Any]
        else { return .unchanged }
        let key = directory.split(separator: "/").last.map(String.init) ?? directory
        let base = root.hasSuffix("/") ? String(root.dropLast()) : root
        // Serialized length of `<base>/<directory>/` in each new path, and what the document grows to.
        let prefixLength = encodedLength(base) + 1 + encodedLength(directory) + 1
        var projected = data.count
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
            projected += prefixLength + encodedLength(name) - encodedLength(old)
            if projected > limit { return .overLimit }
            let new = "\(base)/\(directory)/\(name)"
            if new != old {
                rewritten[name] = new
                changed = true
            }
        }
        guard changed else { return .unchanged }
        document["child_paths"] = rewritten
        guard
            let result = try? JSONSerialization.data(
                withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return .unchanged }
        return result.count > limit ? .overLimit : .rewritten(result)
    }

    /// The bytes `string` takes inside a JSON string literal (slashes unescaped), to size a document before making it.
    static func encodedLength(_ string: String) -> Int {
        string.utf8.reduce(0) { length, byte in
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), 0x08, 0x09, 0x0A, 0x0C, 0x0D: length + 2
            case ..<0x20: length + 6
            default: length + 1
            }
        }
    }
}
