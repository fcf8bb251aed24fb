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

    public struct Error: Swift.Error, CustomStringConvertible {
        public var description: String
    }

    /// Reads and checks the whole file (every key and trusted root it names), so a typo fails at start-up.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw Error(description: "cannot read policy file \(url.path): \(error.localizedDescription)")
        }
        try self.init(json: data, baseDirectory: url.deletingLastPathComponent(), name: url.path)
    }

    public init(json: Data, baseDirectory: URL, name: String = "policy") throws {
        let wire: Wire
        do { wire = try JSONDecoder().decode(Wire.self, from: json) } catch {
            throw Error(description: "policy file \(name) is not valid: \(error)")
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
                    throw Error(description: "\(name): \(pattern): key \(file): \(error)")
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
                throw Error(description: "\(name): \(pattern): trusted root: \(error)")
            }
            for entry in identities {
                let identity: CosignVerifier.Identity
                switch (entry.identity, entry.identityRegexp) {
                case (let exact?, nil): identity = .exact(exact)
                case (nil, let pattern?): identity = .regexp(pattern)
                default:
                    throw Error(
                        description: "\(name): \(pattern): each identity needs exactly one of identity, identityRegexp")
                }
                alternatives.append(
                    .keyless(
                        identity: identity, issuer: entry.issuer, trustedRoot: root, requiredAnnotations: annotations))
            }
        }
        guard !alternatives.isEmpty else {
            throw Error(description: "\(name): \(pattern): a rule needs keys or identities")
        }
        return .anyOf(alternatives)
    }
}
