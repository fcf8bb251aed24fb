/// A reference to an image or a repository in a registry: `host[:port]/path[:tag][@sha256:hex]`.
///
/// Parsing follows the distribution reference grammar and Docker's normalisation of short names
/// (`ubuntu` is `registry-1.docker.io/library/ubuntu`).
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    public static let dockerHub = "registry-1.docker.io"

    /// Registry host, with port when one was given (`localhost:5000`).
    public var registry: String
    /// Repository path inside the registry (`org/cache`).
    public var repository: String
    public var tag: String?
    public var digest: Digest?

    public init(registry: String, repository: String, tag: String? = nil, digest: Digest? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public enum ValidationError: Error, Equatable, CustomStringConvertible {
        case empty
        case invalidRepository(String)
        case invalidTag(String)
        case invalidRegistry(String)
        case invalidDigest(String)
        /// A URL or another tool's transport (`https://`, `oci:`): mcvfs names registries without a scheme.
        case scheme(String)

        public var description: String {
            switch self {
            case .empty: return "image reference is empty"
            case .invalidRepository(let r):
                return "invalid repository name '\(r)': use lowercase letters, digits and separators (. _ - /)"
            case .invalidTag(let t):
                return "invalid tag '\(t)': at most 128 of [A-Za-z0-9_.-], not starting with . or -"
            case .invalidRegistry(let h): return "invalid registry host '\(h)'"
            case .scheme(let text):
                return "'\(text)' is a URL: give REGISTRY/REPOSITORY[:TAG] without a scheme "
                    + "(for a registry that serves plain HTTP, add --plain-http)"
            case .invalidDigest(let d): return "invalid digest '\(d)': expected sha256:<64 hex digits>"
            }
        }
    }

    /// Parses `text`; a first path component is a registry when it has a `.` or `:` or is `localhost`. skopeo's
    /// `docker://` transport prefix is accepted (it names the same thing); another scheme is refused with the fix.
    public init(parsing text: String) throws {
        guard !text.isEmpty else { throw ValidationError.empty }
        var rest = Substring(text)
        if rest.hasPrefix("docker://") { rest = rest.dropFirst("docker://".count) }
        if rest.contains("://") { throw ValidationError.scheme(text) }
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            let digestText = String(rest[rest.index(after: at)...])
            do { digest = try Digest(parsing: digestText) } catch { throw ValidationError.invalidDigest(digestText) }
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry = Self.dockerHub
        if components.count > 1, let first = components.first,
            first.contains(".") || first.contains(":") || first == "localhost"
        {
            registry = first
            components.removeFirst()
        }
        if registry == "docker.io" || registry == "index.docker.io" { registry = Self.dockerHub }
        var repository = components.joined(separator: "/")
        if registry == Self.dockerHub && components.count == 1 { repository = "library/" + repository }

        guard Self.isValidRegistry(registry) else { throw ValidationError.invalidRegistry(registry) }
        guard Self.isValidRepository(repository) else { throw ValidationError.invalidRepository(repository) }
        if let tag, !Self.isValidTag(tag) { throw ValidationError.invalidTag(tag) }
        self.init(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    /// What a registry request names: the digest when pinned, else the tag, else `latest`.
    public var reference: String { digest?.description ?? tag ?? "latest" }

    /// True when neither tag nor digest was given: the whole repository is meant.
    public var isRepositoryOnly: Bool { tag == nil && digest == nil }

    public var repositoryName: String { "\(registry)/\(repository)" }

    public var description: String {
        var text = repositoryName
        if let tag { text += ":\(tag)" }
        if let digest { text += "@\(digest)" }
        return text
    }

    static func isValidTag(_ tag: String) -> Bool {
        guard let first = tag.utf8.first, tag.utf8.count <= 128, first != UInt8(ascii: "."), first != UInt8(ascii: "-")
        else { return false }
        return tag.utf8.allSatisfy {
            isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
        }
    }

    /// Path components are `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
    static func isValidRepository(_ repository: String) -> Bool {
        guard !repository.isEmpty, repository.utf8.count <= 255 else { return false }
        for component in repository.split(separator: "/", omittingEmptySubsequences: false) {
            let bytes = Array(component.utf8)
            guard let first = bytes.first, let last = bytes.last, isLowerAlnum(first), isLowerAlnum(last) else {
                return false
            }
            var i = 0
            while i < bytes.count {
                if isLowerAlnum(bytes[i]) {
                    i += 1
                    continue
                }
                var j = i
                while j < bytes.count, !isLowerAlnum(bytes[j]) { j += 1 }
                let separator = String(decoding: bytes[i..<j], as: UTF8.self)
                guard separator == "." || separator == "_" || separator == "__" || separator.allSatisfy({ $0 == "-" })
                else { return false }
                i = j
            }
        }
        return true
    }

    static func isValidRegistry(_ host: String) -> Bool {
        var name = Substring(host)
        if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") {
            let port = host[host.index(after: colon)...]
            guard !port.isEmpty, port.allSatisfy(\.isASCII), let n = Int(port), (1...65535).contains(n) else {
                return false
            }
            name = host[..<colon]
        }
        if name.hasPrefix("[") && name.hasSuffix("]") { return name.count > 2 }
        guard !name.isEmpty else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") }
        }
    }

    private static func isLowerAlnum(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        isLowerAlnum(c) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c)
    }
}
