import ArgumentParser
import BlobCache
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
            return .keys(
                try publicKeys(), requiredAnnotations: required,
                transparencyLogs: trustedRoot == nil ? [] : try root().transparencyLogs)
        }
        return .keyless(
            identity: try identity(), issuer: certificateOidcIssuer, trustedRoot: try root(),
            requiredAnnotations: required)
    }

    /// The `--key` files.
    func publicKeys() throws -> [PublicKey] {
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
        return loaded
    }

    /// `--certificate-identity` or `--certificate-identity-regexp`.
    func identity() throws -> CosignVerifier.Identity {
        if let certificateIdentity { return .exact(certificateIdentity) }
        guard let certificateIdentityRegexp else {
            throw ValidationError("keyless verification needs --certificate-identity(-regexp)")
        }
        return .regexp(certificateIdentityRegexp)
    }

    /// `--trusted-root`, else the bundled public-good root.
    func root() throws -> TrustedRoot {
        guard let trustedRoot else { return try TrustedRoot.publicGood() }
        do { return try TrustedRoot(json: Data(contentsOf: URL(fileURLWithPath: trustedRoot))) } catch {
            throw ValidationError("--trusted-root \(trustedRoot): \(error)")
        }
    }

    /// Verifies the images `catalog` would use; those without a valid signature become skipped (logged, and their
    /// reason is what status shows). When the user named a tag or digest, any refusal fails the command.
    ///
    /// The signatures read are kept in the cache's `signatures/`; with `client` nil (offline) or a registry that
    /// cannot be reached, those stored signatures are verified instead, so a node keeps serving what it verified.
    /// - Parameter alsoAccepting: signers trusted besides the flags' (a compaction's own signing key).
    func enforce(
        on catalog: inout Catalog, reference: ImageReference, client: RegistryClient?, cache: CacheLayout,
        alsoAccepting extra: TrustPolicy? = nil
    ) throws {
        let given = try policy(for: reference)
        guard let policy = given.map({ flags in extra.map { .anyOf([flags, $0]) } ?? flags }) ?? extra else { return }
        let store: SignatureStore?
        do { store = try SignatureStore(layout: cache) } catch {
            Log.warning("signatures are not kept for outages: \(error)")
            store = nil
        }
        let verifier = ImageVerifier(policy: policy, client: client, repository: reference.repository, store: store)
        var stored: [String] = []
        let refused = catalog.enforce(policy) { digest in
            let verdict = verifier.verify(digest)
            for note in verdict.notes { Log.warning("\(digest.short): \(note)") }
            if case .stored(let reason) = verdict.source, verdict.isTrusted {
                stored.append("\(digest.short) (\(reason))")
            }
            return verdict
        }
        if !stored.isEmpty {
            Log.warning(
                "verified the signatures stored at the last online verification: \(stored.joined(separator: ", "))")
        }
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
            throw TrustFailure.refused(
                image: "\(reference)", digest: first.digest?.description ?? first.name, reason: first.skipReason ?? "")
        }
    }
}

/// What the signature commands (and a policy applied to a named image) refuse, with the evidence.
enum TrustFailure: Error, CustomStringConvertible {
    /// A named image failed its signature policy.
    case refused(image: String, digest: String, reason: String)
    /// An image has no signature at all, or none the policy accepts.
    case unsigned(image: String, digest: String, policy: String?, refused: Int)
    /// A key file could not be decrypted or parsed.
    case unusableKey(path: String, reason: String)
    /// A file the command reads or writes could not be opened.
    case file(String, operation: String, reason: String)

    var description: String {
        switch self {
        case .refused(let image, let digest, let reason): return "\(image) (\(digest)) is refused: \(reason)"
        case .unsigned(let image, let digest, nil, _): return "\(image) (\(digest)) has no signatures"
        case .unsigned(let image, let digest, let policy?, let refused):
            return "\(image) (\(digest)) has no valid signature for \(policy) (\(refused) refused)"
        case .unusableKey(let path, let reason): return "--key \(path): \(reason)"
        case .file(let path, let operation, let reason): return "\(path): cannot \(operation): \(reason)"
        }
    }
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
