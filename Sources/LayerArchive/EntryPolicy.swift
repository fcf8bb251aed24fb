/// The rules that decide whether a layer entry is safe to expose (docs/mcv-images.md: cache layers come from registries
/// anyone can push to). A violation refuses the whole layer rather than dropping the entry, since a layer that
/// carries one is not a cache image built by MCV, and half a cache is worse than none.
///
/// Refused: absolute paths; `..` components; names that are not UTF-8; device, FIFO and socket nodes; setuid and
/// setgid bits (refused, not stripped: no cache file needs them, so their presence marks a crafted layer);
/// symlinks with absolute targets or targets that leave the layer root, following other symlinks of the layer
/// the way the kernel will; entries below a symlink or a file; hard links that leave the layer or name no earlier
/// regular file; reserved `.wh..wh.*` names other than the opaque marker.
enum EntryPolicy {
    /// Which rule an entry breaks; `description` is the reason a refused layer reports (`TarError.hostileEntry`).
    enum Violation: Error, Equatable, CustomStringConvertible {
        case absolutePath
        case parentComponent
        /// A `.wh.` name with entries below it.
        case whiteoutAsDirectory
        /// A `.wh..wh.` name other than the opaque marker.
        case reservedWhiteout
        /// `.wh.` alone, `.wh..` or `.wh...`.
        case whiteoutNamesNothing
        case emptySymlinkTarget
        case absoluteSymlinkTarget(String)
        /// A symlink's target, resolved through the layer's other symlinks, goes above the layer root.
        case symlinkLeavesRoot(target: String)
        /// More than the kernel's 40 symlinks on one resolution.
        case symlinkLoop
        /// An entry below a symlink (`prefix`) of the layer.
        case throughSymlink(prefix: String)
        /// An entry below a non-directory (`prefix`) of the layer.
        case parentNotDirectory(prefix: String)

        var description: String {
            switch self {
            case .absolutePath: return "absolute path"
            case .parentComponent: return "'..' path component"
            case .whiteoutAsDirectory: return "whiteout name used as a directory"
            case .reservedWhiteout: return "reserved whiteout name"
            case .whiteoutNamesNothing: return "whiteout names no entry"
            case .emptySymlinkTarget: return "symlink with empty target"
            case .absoluteSymlinkTarget(let target): return "symlink target '\(target)' is absolute"
            case .symlinkLeavesRoot(let target): return "symlink target '\(target)' leaves the layer root"
            case .symlinkLoop: return "symlink chain too long (loop?)"
            case .throughSymlink(let prefix): return "path passes through symlink '\(prefix)'"
            case .parentNotDirectory(let prefix): return "parent '\(prefix)' is not a directory"
            }
        }
    }

    /// The normalised form of an archive path; "" is the root.
    static func normalise(_ raw: String) throws(Violation) -> String {
        if isNormal(raw) { return raw }
        if raw.hasPrefix("/") { throw .absolutePath }
        var components: [Substring] = []
        for component in raw.split(separator: "/", omittingEmptySubsequences: true) {
            if component == "." { continue }
            if component == ".." { throw .parentComponent }
            components.append(component)
        }
        return components.joined(separator: "/")
    }

    /// True when `raw` is already in normal form: no empty, `.` or `..` component, no leading or trailing slash
    /// (the form every well-made archive uses, checked in one pass over the bytes).
    private static func isNormal(_ raw: String) -> Bool {
        var length = 0
        var dots = 0
        for byte in raw.utf8 {
            if byte == UInt8(ascii: "/") {
                if length == 0 || (dots == length && length <= 2) { return false }
                (length, dots) = (0, 0)
            } else {
                length += 1
                if byte == UInt8(ascii: ".") { dots += 1 }
            }
        }
        return length > 0 && !(dots == length && length <= 2)
    }

    enum Whiteout: Equatable {
        case none
        case whiteout(deleting: String)
        case opaque(directory: String)
    }

    /// Classifies `path` (normalised, non-empty) by its last component's OCI whiteout prefix. A `.wh.` name
    /// anywhere but the last component is refused: whiteouts are files, never directories to descend into.
    static func whiteout(_ path: String) throws(Violation) -> Whiteout {
        guard mentionsWhiteout(path) else { return .none }
        let (parent, name) = split(path)
        if parent.split(separator: "/").contains(where: { $0.hasPrefix(".wh.") }) {
            throw .whiteoutAsDirectory
        }
        guard name.hasPrefix(".wh.") else { return .none }
        if name == ".wh..wh..opq" { return .opaque(directory: parent) }
        if name.hasPrefix(".wh..wh.") { throw .reservedWhiteout }
        let target = String(name.dropFirst(4))
        if target.isEmpty || target == "." || target == ".." { throw .whiteoutNamesNothing }
        return .whiteout(deleting: parent.isEmpty ? target : parent + "/" + target)
    }

    /// Whether any component may start with `.wh.`: a byte search, so that the common path costs no splitting.
    private static func mentionsWhiteout(_ path: String) -> Bool {
        let marker = Array(".wh.".utf8)
        var matched = 0
        for byte in path.utf8 {
            matched = byte == marker[matched] ? matched + 1 : (byte == marker[0] ? 1 : 0)
            if matched == marker.count { return true }
        }
        return false
    }

    static func split(_ path: String) -> (parent: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }

    /// Checks that every symlink's target, resolved as the kernel would (following the layer's other symlinks),
    /// stays inside the layer root, and that no entry lies below a symlink or a non-directory.
    /// Whiteouts are held to the same rule: what they delete, or the directory they make opaque, must not be
    /// reached through a symlink, or applying them across layers would act outside the named directory.
    /// - Parameters:
    ///   - entries: final entries keyed by path (whiteouts excluded).
    ///   - whiteouts: whiteout and opaque-whiteout entries.
    /// - Returns: nil when the tree is safe, else the offending path and why.
    static func validateTree(
        _ entries: [String: TarEntry], whiteouts: [TarEntry] = []
    ) -> (path: String, violation: Violation)? {
        if let verdict = quickCheck(entries, whiteouts: whiteouts) { return verdict }
        // The paths whose ancestors must be real directories; an opaque whiteout's own directory as well.
        var checks = entries.keys.map { (path: $0, through: $0.split(separator: "/").dropLast()) }
        for whiteout in whiteouts {
            let components = whiteout.path.split(separator: "/")
            checks.append((whiteout.path, whiteout.kind == .opaqueWhiteout ? components[...] : components.dropLast()))
        }
        for (path, ancestors) in checks.sorted(by: { $0.path < $1.path }) {
            var prefix = ""
            for component in ancestors {
                prefix = prefix.isEmpty ? String(component) : prefix + "/" + component
                guard let ancestor = entries[prefix] else { continue }
                switch ancestor.kind {
                case .directory: continue
                case .symlink: return (path, .throughSymlink(prefix: prefix))
                default: return (path, .parentNotDirectory(prefix: prefix))
                }
            }
        }
        for (path, entry) in entries.filter({ $0.value.kind == .symlink }).sorted(by: { $0.key < $1.key }) {
            var budget = 40  // the kernel's MAXSYMLINKS
            do {
                let directory = split(path).parent.split(separator: "/").map(String.init)
                _ = try resolve(from: directory, target: entry.linkTarget ?? "", entries: entries, budget: &budget)
            } catch {
                return (path, error)
            }
        }
        return nil
    }

    /// The common case decided cheaply: no symlink in the layer and every distinct parent directory made only of
    /// directories. Returns `.some(nil)` when the tree is safe, nil when the full check must run (it names the
    /// offending path).
    private static func quickCheck(
        _ entries: [String: TarEntry], whiteouts: [TarEntry]
    ) -> (path: String, violation: Violation)?? {
        guard !entries.values.contains(where: { $0.kind == .symlink }) else { return nil }
        var parents = Set<Substring>()
        for path in entries.keys {
            if let slash = path.lastIndex(of: "/") { parents.insert(path[..<slash]) }
        }
        for whiteout in whiteouts { parents.insert(Substring(whiteout.path)) }
        var good = Set<Substring>()
        for parent in parents {
            var end = parent.endIndex
            while true {
                let prefix = parent[..<end]
                if prefix.isEmpty || good.contains(prefix) { break }
                if let ancestor = entries[String(prefix)], ancestor.kind != .directory { return nil }
                good.insert(prefix)
                guard let slash = prefix.lastIndex(of: "/") else { break }
                end = slash
            }
        }
        return .some(nil)
    }

    private static func resolve(
        from directory: [String], target: String, entries: [String: TarEntry], budget: inout Int
    ) throws(Violation) -> [String] {
        if target.isEmpty { throw .emptySymlinkTarget }
        if target.hasPrefix("/") { throw .absoluteSymlinkTarget(target) }
        var stack = directory
        for component in target.split(separator: "/") where component != "." {
            if component == ".." {
                if stack.isEmpty { throw .symlinkLeavesRoot(target: target) }
                stack.removeLast()
                continue
            }
            stack.append(String(component))
            if let link = entries[stack.joined(separator: "/")], link.kind == .symlink {
                budget -= 1
                if budget < 0 { throw .symlinkLoop }
                stack.removeLast()
                // A failure below names the inner link's target, which is the one that leaves the root.
                stack = try resolve(from: stack, target: link.linkTarget ?? "", entries: entries, budget: &budget)
            }
        }
        return stack
    }
}
