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

    /// The most bytes a relocated file may have: rewriting replaces a prefix of each path by the consumer root and
    /// the file's directory, which the user chooses too (a group file nested 4 KiB deep turned 0.8 MB of short
    /// paths into 163 MB). A relocation that would exceed `outputLimit(forInput:)` stops as soon as it does, and the
    /// file is served as it is. Real files change by the difference of two roots per path: well under this.
    public static let outputLimit = 2 << 20

    /// The bound for an input of `count` bytes: twice the input plus 64 KiB (room for a long consumer root in a
    /// small file), never more than `outputLimit`.
    public static func outputLimit(forInput count: Int) -> Int {
        min(outputLimit, 2 * count + (64 << 10))
    }

    /// What relocating one file gave.
    public enum Outcome: Equatable, Sendable {
        /// Nothing to change (no rule applies, the content does not parse, or the paths are already the consumer's).
        case unchanged
        case rewritten(Data)
        /// The rewritten file would exceed `outputLimit(forInput:)`: served as it is.
        case overLimit
    }

    /// True for files whose content is rewritten when served.
    public static func applies(to name: String) -> Bool {
        GroupRelocation.isGroupFile(name) || name == vllmCompileIndex
    }

    /// The content as consumers must see it, or nil when nothing needs to change or the result would exceed
    /// `outputLimit(forInput:)` (see `relocate` to tell the two apart).
    /// - Parameters:
    ///   - name: the file's name (it decides the rule).
    ///   - directory: the file's directory relative to the cache root.
    ///   - root: the cache root as the consuming process sees it.
    public static func rewrite(_ data: Data, name: String, directory: String, root: String) -> Data? {
        guard case .rewritten(let rewritten) = relocate(data, name: name, directory: directory, root: root) else {
            return nil
        }
        return rewritten
    }

    /// Relocates `data` like `rewrite`, saying why when it does not.
    public static func relocate(_ data: Data, name: String, directory: String, root: String) -> Outcome {
        let limit = outputLimit(forInput: data.count)
        if GroupRelocation.isGroupFile(name) {
            return GroupRelocation.relocate(data, directory: directory, root: root, limit: limit)
        }
        if name == vllmCompileIndex { return relocateCompileIndex(data, root: root, limit: limit) }
        return .unchanged
    }

    /// vLLM 0.9–0.28 keep `vllm_compile_cache.py`, a Python literal whose values name artifacts by absolute path
    /// (`/home/vllm/.cache/vllm/torch_compile_cache/<hash>/rank_0_0/inductor_cache/...`), and open them as
    /// written. Every quoted absolute path through `torch_compile_cache/` is moved under `root`, which is
    /// what `VLLM_CACHE_ROOT` points at (`CompileIndexRelocation` has the rule). String work only: the daemon never
    /// touches these paths.
    static func relocateCompileIndex(_ data: Data, root: String, limit: Int) -> Outcome {
        guard String(data: data, encoding: .utf8) != nil else { return .unchanged }
        let base = root.hasSuffix("/") ? String(root.dropLast()) : root
        var examined = 0
        return CompileIndexRelocation.relocate(Array(data), base: Array(base.utf8), limit: limit, examined: &examined)
    }
}
