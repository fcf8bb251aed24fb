import ArgumentParser
import Foundation
import OCI
import Registry
import Trust
import Verification

struct SignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign an image with a cosign key, as `cosign sign --key --tlog-upload=false` does.",
        discussion: """
            Resolves the reference to its manifest digest and signs it in the layouts given by --signature-format: \
            'bundle' attaches a Sigstore bundle v0.3 (a DSSE in-toto statement, predicate \
            https://sigstore.dev/cosign/sign/v1) as an OCI referrer of the image, as cosign v3 does by default \
            (listed in the sha256-<hex> index on registries without the referrers API); 'legacy' adds a layer to \
            the image at tag sha256-<hex>.sig, as cosign v1 and v2 do, keeping the signatures already there; \
            'both' (the default) does both, so cosign v2, cosign v3 and containers/image verifiers all find it. \
            Signing again with the same key and annotations adds nothing. The key's password comes from \
            COSIGN_PASSWORD, else a prompt on the terminal.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "The private key (cosign.key from `cosign generate-key-pair` or `mcvfs generate-key-pair`).")
    var key: String

    @Option(
        name: [.customShort("a"), .customLong("annotations")],
        help: "key=value to put in the signed payload. Repeatable.")
    var annotations: [String] = []

    @Option(help: SignatureFormat.help) var signatureFormat: SignatureFormat = .both

    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String

    func validate() throws { _ = try parseAnnotations(annotations) }

    func run() throws {
        try runReportingErrors(global) {
            let ref = try ImageReference(parsing: reference)
            let privateKey = try loadPrivateKey(path: key)
            let client = try global.client(for: ref)
            let image = try client.getManifest(repository: ref.repository, reference: ref.reference).descriptor
            let digest = image.digest
            let result = try ImageSigner(client: client, repository: ref.repository).sign(
                subject: image, reference: Self.dockerReference(ref), annotations: try parseAnnotations(annotations),
                key: privateKey, formats: signatureFormat.formats)
            print("signed \(ref.repositoryName)@\(digest) with key sha256:\(privateKey.publicKey.fingerprint)")
            let tag = CosignSignature.signatureTag(for: digest)
            switch result.legacy {
            case .appended(let manifest, let count):
                print("pushed \(ref.repositoryName):\(tag) (\(manifest)), \(count) signature(s)")
            case .alreadySigned: print("\(tag) already carries this signature; nothing pushed")
            case nil: break
            }
            switch result.bundle {
            case .attached(let referrer, let fallbackTag):
                print(
                    "pushed bundle referrer \(ref.repositoryName)@\(referrer)"
                        + (fallbackTag.map { ", listed in \(ref.repositoryName):\($0)" } ?? ""))
            case .alreadySigned: print("a bundle referrer already carries this signature; nothing pushed")
            case nil: break
            }
        }
    }

    /// cosign's `docker-reference`: the repository as go-containerregistry names it (Docker Hub as index.docker.io).
    static func dockerReference(_ reference: ImageReference) -> String {
        let registry = reference.registry == ImageReference.dockerHub ? "index.docker.io" : reference.registry
        return "\(registry)/\(reference.repository)"
    }
}

/// Reads and decrypts a cosign.key, asking for its password as cosign does.
func loadPrivateKey(path: String) throws -> PrivateKey {
    let pem: String
    do { pem = try String(contentsOfFile: path, encoding: .utf8) } catch {
        throw ValidationError("--key \(path): cannot read: \(error.localizedDescription)")
    }
    do {
        return try EncryptedPrivateKey.decrypt(pem: pem, password: try Password.read())
    } catch let error as VerificationError {
        throw TrustFailure.unusableKey(path: path, reason: "\(error)")
    }
}
