import ArgumentParser
import ContentHash
import Foundation
import OCI
import Verification

struct VerifyBlobCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-blob",
        abstract: "Verify a Sigstore bundle for a file or a digest, as `cosign verify-blob --bundle` does.",
        discussion: """
            ARTIFACT is a file, or sha256:<64 hex> to verify against a digest without the file (when no file of \
            that name exists). The bundle (v0.1 to v0.3) holds a message signature over the artifact, or a DSSE \
            envelope whose in-toto statement names the artifact as a subject. It is checked with the verifier \
            mounts use: --key, or a keyless identity against --trusted-root (default: the bundled Sigstore \
            public-good root), with Rekor v1 and v2 entries and RFC 3161 timestamps. Nothing is fetched: \
            verification is offline. Exits 0 when the bundle verifies, 1 with the reason otherwise.
            """)

    @OptionGroup var trust: TrustOptions

    @Option(help: "The Sigstore bundle (JSON).") var bundle: String

    @Flag(help: "Print the result as JSON.") var json = false

    @Argument(help: "The artifact: a file path, or sha256:<64 hex>.") var artifact: String

    struct Report: Encodable {
        var artifact: String
        var digest: String
        var signer: String
        var mediaType: String
        var content: String
        var predicateType: String?
        var logIndex: Int64?
        var signingTimes: [String]
    }

    func validate() throws {
        guard trust.policyFile == nil else {
            throw ValidationError(
                "verify-blob takes --key or --certificate-identity(-regexp); --policy names repositories")
        }
        guard !trust.keys.isEmpty || trust.certificateIdentity != nil || trust.certificateIdentityRegexp != nil else {
            throw ValidationError("verify-blob needs --key or --certificate-identity(-regexp)")
        }
    }

    func run() throws {
        do {
            let (digest, bytes) = try Self.artifact(artifact)
            let parsed = try SigstoreBundle(json: try Self.read(bundle, what: "--bundle"))
            let verified = try verifier().verify(bundle: parsed, artifact: digest, bytes: bytes)
            let report = Report(
                artifact: artifact, digest: digest.description, signer: verified.signer.description,
                mediaType: parsed.mediaType, content: parsed.envelope == nil ? "message signature" : "DSSE envelope",
                predicateType: verified.predicateType, logIndex: verified.logEntry?.logIndex,
                signingTimes: verified.signingTimes.map { $0.formatted(.iso8601) })
            if json {
                try printJSON(report)
            } else {
                var line = "verified \(artifact) (\(digest)): \(report.content) signed by \(report.signer)"
                if let index = report.logIndex { line += ", logged at index \(index)" }
                if let time = report.signingTimes.first { line += ", signed at \(time)" }
                print(line)
            }
        } catch {
            // A key or trusted root that does not load is a refusal like any other: exit 1 with the reason.
            let reason = (error as? ValidationError)?.message ?? "\(error)"
            FileHandle.standardError.write(Data("mcvfs: error: \(reason)\n".utf8))
            throw ExitCode.failure
        }
    }

    /// The policy as one verifier: a key policy checks the entries of the trusted root's logs too.
    private func verifier() throws -> CosignVerifier {
        let root = try trust.root()
        let annotations = try trust.requiredAnnotations()
        if !trust.keys.isEmpty {
            return CosignVerifier(
                policy: .key(try trust.publicKeys()), requiredAnnotations: annotations,
                transparencyLogs: root.transparencyLogs)
        }
        return CosignVerifier(
            policy: .keyless(trustedRoot: root, identity: try trust.identity(), issuer: trust.certificateOidcIssuer),
            requiredAnnotations: annotations)
    }

    /// Files up to this size are also kept in memory: an Ed25519 message signature is over the bytes themselves.
    static let keptInMemory = 16 << 20

    /// `sha256:<hex>` names a digest unless a file has that name (the sigstore-conformance rule); anything else
    /// is a file, hashed as it is read.
    static func artifact(_ text: String) throws -> (Digest, Data?) {
        if text.hasPrefix("sha256:"), text.count == 71, !FileManager.default.fileExists(atPath: text),
            let digest = try? Digest(parsing: text)
        {
            return (digest, nil)
        }
        guard let file = FileHandle(forReadingAtPath: text) else {
            throw TrustFailure.file("artifact \(text)", operation: "open", reason: "no such file or not readable")
        }
        defer { try? file.close() }
        var hasher = SHA256Hasher()
        var kept: Data? = Data()
        while let chunk = try file.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(chunk)
            if kept.map({ $0.count + chunk.count <= keptInMemory }) == true { kept?.append(chunk) } else { kept = nil }
        }
        return (hasher.finalize(), kept)
    }

    private static func read(_ path: String, what: String) throws -> Data {
        do { return try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw TrustFailure.file("\(what) \(path)", operation: "read", reason: error.localizedDescription)
        }
    }
}
