import ArgumentParser
import Foundation
import OCI
import Registry
import Trust
import Verification

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify an image's cosign signatures (legacy .sig images and Sigstore bundle referrers).",
        discussion: """
            Resolves the reference to a manifest digest, reads every signature of that digest (tag sha256-<hex>.sig, \
            and Sigstore bundles through the referrers API or its sha256-<hex> fallback tag) and checks each against \
            --key, the keyless identity flags, or --policy. Prints who signed what; exits 1 when no signature is \
            valid, listing each one's reason.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var trust: TrustOptions

    @Flag(help: "Print the result as JSON (also when verification fails).")
    var json = false

    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String

    struct Report: Encodable {
        struct Signature: Encodable {
            var layout: String
            var signer: String
            var key: String?
            var identity: String?
            var issuer: String?
            var dockerReference: String
            var annotations: [String: JSONValue]
            var predicateType: String?
            var logIndex: Int64?
            var integratedTime: String?
            /// Verified signing times (RFC 3161 timestamps, Rekor v1 integrated times).
            var signingTimes: [String]
        }
        struct Failure: Encodable {
            var layout: String?
            var reason: String
        }
        var reference: String
        var digest: String
        var policy: String
        var verified: Bool
        var signatures: [Signature]
        var failures: [Failure]
    }

    func validate() throws {
        guard trust.isEnabled else {
            throw ValidationError("verify needs --key, --certificate-identity(-regexp) or --policy")
        }
    }

    func run() throws {
        try runReportingErrors(global) {
            let ref = try ImageReference(parsing: reference)
            guard let policy = try trust.policy(for: ref) else { return }
            let client = try global.client(for: ref)
            let digest = try client.getManifest(repository: ref.repository, reference: ref.reference).digest
            let verdict = ImageVerifier(policy: policy, client: client, repository: ref.repository).verify(digest)
            let report = Self.report(verdict, reference: ref, policy: policy)
            if json {
                try printJSON(report)
            } else {
                for signature in report.signatures {
                    var line = "\(ref.repositoryName)@\(digest): \(signature.layout) signature by \(signature.signer)"
                    line += " as \(signature.dockerReference)"
                    if !signature.annotations.isEmpty {
                        line +=
                            ", annotations "
                            + signature.annotations.keys.sorted().map {
                                "\($0)=\(signature.annotations[$0]!)"
                            }.joined(separator: " ")
                    }
                    if let index = signature.logIndex { line += ", Rekor log index \(index)" }
                    print(line)
                }
                for failure in report.failures {
                    let what = failure.layout.map { "\($0) signature" } ?? "signature"
                    FileHandle.standardError.write(Data("  \(what) refused: \(failure.reason)\n".utf8))
                }
            }
            guard verdict.isTrusted else {
                throw TrustFailure.unsigned(
                    image: "\(ref)", digest: "\(digest)", policy: verdict.rejected.isEmpty ? nil : "\(policy)",
                    refused: verdict.rejected.count)
            }
        }
    }

    static func report(_ verdict: Verdict, reference: ImageReference, policy: TrustPolicy) -> Report {
        Report(
            reference: reference.description, digest: verdict.digest.description, policy: policy.description,
            verified: verdict.isTrusted,
            signatures: verdict.accepted.map { accepted in
                let signature = accepted.signature
                var entry = Report.Signature(
                    layout: accepted.layout.rawValue, signer: signature.signer.description,
                    dockerReference: signature.dockerReference, annotations: signature.annotations,
                    predicateType: signature.predicateType, logIndex: signature.logEntry?.logIndex,
                    integratedTime: signature.logEntry?.integratedTime?.formatted(.iso8601),
                    signingTimes: signature.signingTimes.map { $0.formatted(.iso8601) })
                switch signature.signer {
                case .key(let key): entry.key = "sha256:" + key.fingerprint
                case .certificate(let identity, let issuer, _):
                    entry.identity = identity
                    entry.issuer = issuer
                }
                return entry
            },
            failures: verdict.rejected.map { Report.Failure(layout: $0.layout?.rawValue, reason: $0.reason) })
    }
}
