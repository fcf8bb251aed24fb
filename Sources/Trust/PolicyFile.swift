import Foundation
import Verification

/// `--policy FILE`: which keys and identities each repository's images must be signed by.
///
/// ```json
/// {
///   "repositories": {
///     "registry.example.com/org/cache": { "keys": ["keys/team.pub"] },
///     "registry.example.com/org/*": {
///       "identities": [{ "identity": "ci@example.com", "issuer": "https://accounts.example.com" }],
///       "annotations": { "env": "prod" }
///     },
///     "*": { "keys": ["/etc/mcvfs/fallback.pub"] }
///   }
/// }
/// ```
/// A rule names `keys` (PEM public key files), `identities` (`identity` or `identityRegexp`, optional `issuer`;
/// checked against `trustedRoot`, default the bundled public-good root), or both (either kind of signature will do),
/// and optional required payload `annotations`. Relative paths are relative to the policy file. A repository is
/// matched exactly, then by the longest `prefix/*` pattern, then by `*`; a repository no rule matches gets no image
/// trusted.
public struct PolicyFile: Sendable {
    struct Rule: Decodable {
        struct IdentityRule: Decodable {
            var identity: String?
            var identityRegexp: String?
            var issuer: String?
        }
        var keys: [String]?
        var identities: [IdentityRule]?
        var trustedRoot: String?
        var annotations: [String: String]?
    }

    private struct Wire: Decodable { var repositories: [String: Rule] }

    private let rules: [String: TrustPolicy]

    /// Why a policy file is refused; each case names the file (and the rule) at fault.
    public enum Error: Swift.Error, Equatable, CustomStringConvertible {
        /// The file could not be read.
        case unreadable(file: String, reason: String)
        /// The file is not the policy's JSON.
        case malformed(file: String, reason: String)
        /// A rule's key or trusted root could not be loaded.
        case unusable(file: String, pattern: String, what: String, reason: String)
        /// A rule is incomplete or contradicts itself.
        case invalidRule(file: String, pattern: String, reason: String)

        public var description: String {
            switch self {
            case .unreadable(let file, let reason): return "cannot read policy file \(file): \(reason)"
            case .malformed(let file, let reason): return "policy file \(file) is not valid: \(reason)"
            case .unusable(let file, let pattern, let what, let reason):
                return "\(file): \(pattern): \(what): \(reason)"
            case .invalidRule(let file, let pattern, let reason): return "\(file): \(pattern): \(reason)"
            }
        }
    }

    /// Reads and checks the whole file (every key and trusted root it names), so a typo fails at start-up.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw Error.unreadable(file: url.path, reason: error.localizedDescription)
        }
        try self.init(json: data, baseDirectory: url.deletingLastPathComponent(), name: url.path)
    }

    public init(json: Data, baseDirectory: URL, name: String = "policy") throws {
        let wire: Wire
        do { wire = try JSONDecoder().decode(Wire.self, from: json) } catch {
            throw Error.malformed(file: name, reason: "\(error)")
        }
        var rules: [String: TrustPolicy] = [:]
        for (pattern, rule) in wire.repositories {
            rules[pattern] = try Self.policy(rule, pattern: pattern, base: baseDirectory, name: name)
        }
        self.rules = rules
    }

    /// The policy for `registry/repository`.
    public func policy(for repositoryName: String) -> TrustPolicy {
        if let exact = rules[repositoryName] { return exact }
        let prefixes = rules.keys.filter { $0.hasSuffix("/*") && repositoryName.hasPrefix(String($0.dropLast())) }
        if let longest = prefixes.max(by: { $0.count < $1.count }) { return rules[longest]! }
        if let any = rules["*"] { return any }
        return .rejectAll("the policy file has no rule for \(repositoryName)")
    }

    private static func policy(_ rule: Rule, pattern: String, base: URL, name: String) throws -> TrustPolicy {
        func path(_ text: String) -> URL {
            text.hasPrefix("/") ? URL(fileURLWithPath: text) : base.appendingPathComponent(text)
        }
        let annotations = rule.annotations ?? [:]
        var alternatives: [TrustPolicy] = []
        let keyFiles = rule.keys ?? []
        if !keyFiles.isEmpty {
            var keys: [PublicKey] = []
            for file in keyFiles {
                do {
                    keys.append(try PublicKey(pem: String(contentsOf: path(file), encoding: .utf8)))
                } catch {
                    throw Error.unusable(file: name, pattern: pattern, what: "key \(file)", reason: "\(error)")
                }
            }
            alternatives.append(.keys(keys, requiredAnnotations: annotations))
        }
        let identities = rule.identities ?? []
        if !identities.isEmpty {
            let root: TrustedRoot
            do {
                root =
                    try rule.trustedRoot.map { try TrustedRoot(json: Data(contentsOf: path($0))) }
                    ?? TrustedRoot.publicGood()
            } catch {
                throw Error.unusable(file: name, pattern: pattern, what: "trusted root", reason: "\(error)")
            }
            for entry in identities {
                let identity: CosignVerifier.Identity
                switch (entry.identity, entry.identityRegexp) {
                case (let exact?, nil): identity = .exact(exact)
                case (nil, let pattern?): identity = .regexp(pattern)
                default:
                    throw Error.invalidRule(
                        file: name, pattern: pattern,
                        reason: "each identity needs exactly one of identity, identityRegexp")
                }
                alternatives.append(
                    .keyless(
                        identity: identity, issuer: entry.issuer, trustedRoot: root, requiredAnnotations: annotations))
            }
        }
        guard !alternatives.isEmpty else {
            throw Error.invalidRule(file: name, pattern: pattern, reason: "a rule needs keys or identities")
        }
        return .anyOf(alternatives)
    }
}
