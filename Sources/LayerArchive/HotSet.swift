import Foundation

/// The entries of a cache a workload uses, in the order it first opened them: what `mcvfs push --hot-set` puts at
/// the front of an eStargz layer, before its `.prefetch.landmark`, so that a mount fetches them all with one range
/// request at its first lookup (stargz-snapshotter `docs/estargz.md`, "Prioritized Files and Landmark Files").
///
/// Names are relative to the cache root a mount serves: a Triton `<KEY>` directory, or a deeper path such as
/// `torch_compile_cache/<hash>/rank_0_0` (everything at or below a name belongs to the set). The text form, which a
/// mount records in its status directory and `mcvfs export --hot-set` writes, is one name per line; blank lines and
/// lines starting with `#` are ignored.
public struct HotSet: Sendable, Hashable {
    /// Distinct names in first-use order.
    public private(set) var names: [String] = []
    private var members: Set<String> = []

    public init(_ names: [String] = []) {
        for name in names { insert(name) }
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case invalidName(line: Int, name: String, reason: String)

        public var description: String {
            switch self {
            case .invalidName(let line, let name, let reason): return "hot set line \(line): '\(name)': \(reason)"
            }
        }
    }

    /// Parses the text form; a name with `..`, `.` or empty components, or an absolute one, is refused.
    public init(parsing text: String) throws(ParseError) {
        var names: [String] = []
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            var name = Substring(line)
            while name.hasSuffix("/") { name = name.dropLast() }
            if line.hasPrefix("/") {
                throw .invalidName(line: number + 1, name: line, reason: "absolute; names are relative to the cache")
            }
            let parts = name.split(separator: "/", omittingEmptySubsequences: false)
            if parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
                throw .invalidName(line: number + 1, name: line, reason: "empty, '.' or '..' component")
            }
            names.append(String(name))
        }
        self.init(names)
    }

    /// Reads and parses the file at `path`.
    /// - Throws: `ParseError`, or the error reading the file.
    public init(contentsOf path: String) throws {
        try self.init(parsing: try String(contentsOfFile: path, encoding: .utf8))
    }

    /// The text form (ends with a newline unless empty).
    public var text: String { names.map { $0 + "\n" }.joined() }

    /// Adds `name` unless present; true when it was new.
    @discardableResult
    public mutating func insert(_ name: String) -> Bool {
        guard members.insert(name).inserted else { return false }
        names.append(name)
        return true
    }

    public var isEmpty: Bool { names.isEmpty }

    public func contains(_ name: String) -> Bool { members.contains(name) }
}
