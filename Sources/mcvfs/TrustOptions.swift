import ArgumentParser
import Foundation
import OCI
import Registry
import Trust
import Verification

/// Signature policy flags shared by `verify`, `mount`, `fetch` (and `extract`): cosign's own flag names.
/// Without any of them nothing is verified; with any, an image without a valid signature is never used.
struct TrustOptions: ParsableArguments {
    @Option(
        name: .customLong("key"),
        help: "Trust images signed with this public key (cosign.pub, PEM). Repeatable: any of them.")
    var keys: [String] = []

    @Option(help: "Trust keyless (Fulcio) signatures whose certificate names exactly this identity (email, URI).")
    var certificateIdentity: String?

    @Option(help: "Trust keyless signatures whose certificate identity matches this regular expression.")
    var certificateIdentityRegexp: String?

    @Option(
        help: "The OIDC issuer the keyless certificate must name (e.g. https://token.actions.githubusercontent.com).")
    var certificateOidcIssuer: String?

    @Option(help: "Sigstore trusted_root.json for keyless verification (default: the bundled public-good root).")
    var trustedRoot: String?

    @Option(
        name: .customLong("policy"), help: "JSON file naming the keys and identities each repository must be signed by."
    )
    var policyFile: String?

    @Option(
        name: [.customShort("a"), .customLong("annotations")],
        help: "key=value the signed payload must carry. Repeatable.")
    var annotations: [String] = []

    var isEnabled: Bool {
        !keys.isEmpty || certificateIdentity != nil || certificateIdentityRegexp != nil || policyFile != nil
    }

    func validate() throws {
        if certificateIdentity != nil && certificateIdentityRegexp != nil {
            throw ValidationError("--certificate-identity and --certificate-identity-regexp exclude each other")
        }
        let keyless = certificateIdentity != nil || certificateIdentityRegexp != nil
        if !keys.isEmpty && keyless {
            throw ValidationError(
                "use --key or --certificate-identity(-regexp), not both (a --policy file may name both)")
        }
        if policyFile != nil && (!keys.isEmpty || keyless) {
            throw ValidationError("--policy replaces --key and --certificate-identity(-regexp); give one or the other")
        }
        if !isEnabled && (certificateOidcIssuer != nil || trustedRoot != nil || !annotations.isEmpty) {
            throw ValidationError(
                "--certificate-oidc-issuer, --trusted-root and -a need --key, --certificate-identity(-regexp) "
                    + "or --policy"
            )
        }
        _ = try requiredAnnotations()
    }

    func requiredAnnotations() throws -> [String: String] {
        try parseAnnotations(annotations)
    }

    /// The policy for `reference`'s repository, or nil when no flag asks for verification.
    func policy(for reference: ImageReference) throws -> TrustPolicy? {
        guard isEnabled else { return nil }
        if let policyFile {
            return try PolicyFile(contentsOf: URL(fileURLWithPath: policyFile)).policy(for: reference.repositoryName)
        }
        let required = try requiredAnnotations()
        if !keys.isEmpty {
            var loaded: [PublicKey] = []
            for path in keys {
                do {
                    loaded.append(try PublicKey(pem: String(contentsOfFile: path, encoding: .utf8)))
                } catch let error as VerificationError {
                    throw ValidationError("--key \(path): \(error)")
                } catch {
                    throw ValidationError("--key \(path): cannot read: \(error.localizedDescription)")
                }
            }
            return .keys(loaded, requiredAnnotations: required)
        }
        let identity: CosignVerifier.Identity =
            certificateIdentity.map { .exact($0) } ?? .regexp(certificateIdentityRegexp!)
        let root: TrustedRoot
        if let trustedRoot {
            do { root = try TrustedRoot(json: Data(contentsOf: URL(fileURLWithPath: trustedRoot))) } catch {
                throw ValidationError("--trusted-root \(trustedRoot): \(error)")
            }
        } else {
            root = try TrustedRoot.publicGood()
        }
        return .keyless(
            identity: identity, issuer: certificateOidcIssuer, trustedRoot: root, requiredAnnotations: required)
    }

    /// Verifies the images `catalog` would use; those without a valid signature become skipped (logged, and their
    /// reason is what status shows). When the user named a tag or digest, any refusal fails the command.
    func enforce(on catalog: inout Catalog, reference: ImageReference, client: RegistryClient) throws {
        guard let policy = try policy(for: reference) else { return }
        let verifier = ImageVerifier(policy: policy, client: client, repository: reference.repository)
        let refused = catalog.enforce(policy) { verifier.verify($0) }
        for entry in catalog.entries {
            if let signers = entry.signedBy {
                Log.info(
                    "verified \(entry.name) \(entry.digest?.short ?? ""): signed by \(signers.joined(separator: ", "))")
            }
        }
        for entry in refused {
            Log.warning("not using \(entry.name) \(entry.digest?.short ?? ""): \(entry.skipReason ?? "")")
        }
        if !reference.isRepositoryOnly, let first = refused.first {
            throw TrustFailure(
                description:
                    "\(reference) (\(first.digest?.description ?? first.name)) is refused: \(first.skipReason ?? "")")
        }
    }
}

/// A named image that failed its signature policy.
struct TrustFailure: Error, CustomStringConvertible {
    var description: String
}

/// `-a key=value` pairs; the first `=` splits.
func parseAnnotations(_ pairs: [String]) throws -> [String: String] {
    var result: [String: String] = [:]
    for pair in pairs {
        guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
            throw ValidationError("annotation '\(pair)' is not key=value")
        }
        result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
    return result
}
