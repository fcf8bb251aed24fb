import Foundation

/// The files of a compile cache that name absolute paths of the machine that built it, and how each is served
/// so that the names point under the consumer's root instead (docs/relocation.md).
public enum Relocation {
    public static let vllmCompileIndex = "vllm_compile_cache.py"

    /// The most bytes of a file to relocate that the daemon reads from a user's upper: Triton's group files hold a
    /// few KiB, `vllm_compile_cache.py` some tens. A larger one is served as it is, never read whole, so one
    /// user's 4 GiB sparse `__grp__x.json` costs the daemon nothing (a `stat` reads it on every call). Every
    /// relocation rule reads through this bound (`DirectoryDescriptor.read(_:limit:)`).
    public static let inputLimit = 1 << 20

    /// True for files whose content is rewritten when served.
    public static func applies(to name: String) -> Bool {
        GroupRelocation.isGroupFile(name) || name == vllmCompileIndex
    }

    /// The content as consumers must see it, or nil when nothing needs to change.
    /// - Parameters:
    ///   - name: the file's name (it decides the rule).
    ///   - directory: the file's directory relative to the cache root.
    ///   - root: the cache root as the consuming process sees it.
    public static func rewrite(_ data: Data, name: String, directory: String, root: String) -> Data? {
        if GroupRelocation.isGroupFile(name) { return GroupRelocation.rewrite(data, directory: directory, root: root) }
        if name == vllmCompileIndex { return rewriteCompileIndex(data, root: root) }
        return nil
    }

    /// vLLM 0.9–0.28 keep `vllm_compile_cache.py`, a Python literal whose values name artifacts by absolute path
    /// (`/home/vllm/.cache/vllm/torch_compile_cache/<hash>/rank_0_0/inductor_cache/...`), and open them as
    /// written. Every quoted absolute path through `torch_compile_cache/` is moved under `root`, which is
    /// what `VLLM_CACHE_ROOT` points at. String work only: the daemon never touches these paths.
    static func rewriteCompileIndex(_ data: Data, root: String) -> Data? {
        guard let text = String(data: data, encoding: .utf8) else { return nil }
        let base = root.hasSuffix("/") ? String(root.dropLast()) : root
        let pattern = #"(['"])/[^'"\n]*?/(torch_compile_cache/[^'"\n]*)\1"#
        guard let expression = try? NSRegularExpression(pattern: pattern) else { return nil }
        let range = NSRange(text.startIndex..., in: text)
        let replacement = "$1" + NSRegularExpression.escapedTemplate(for: base) + "/$2$1"
        let rewritten = expression.stringByReplacingMatches(in: text, range: range, withTemplate: replacement)
        return rewritten == text ? nil : Data(rewritten.utf8)
    }
}
