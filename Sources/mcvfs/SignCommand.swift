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
            Resolves the reference to its manifest digest and adds a signature layer to the image at tag \
            sha256-<hex>.sig in the same repository, keeping the signatures already there. The key's password comes \
            from COSIGN_PASSWORD, else a prompt on the terminal.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "The private key (cosign.key from `cosign generate-key-pair` or `mcvfs generate-key-pair`).")
    var key: String

    @Option(
        name: [.customShort("a"), .customLong("annotations")],
        help: "key=value to put in the signed payload. Repeatable.")
    var annotations: [String] = []

    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String

    func validate() throws { _ = try parseAnnotations(annotations) }

    func run() throws {
        try runReportingErrors(global) {
            let ref = try ImageReference(parsing: reference)
            let privateKey = try loadPrivateKey(path: key)
            let client = try global.client(for: ref)
            let digest = try client.getManifest(repository: ref.repository, reference: ref.reference).digest
            let outcome = try CosignSigner(client: client, repository: ref.repository).sign(
                digest: digest, reference: Self.dockerReference(ref), annotations: try parseAnnotations(annotations),
                key: privateKey)
            let tag = CosignSignature.signatureTag(for: digest)
            switch outcome {
            case .appended(let manifest, let count):
                print("signed \(ref.repositoryName)@\(digest) with key sha256:\(privateKey.publicKey.fingerprint)")
                print("pushed \(ref.repositoryName):\(tag) (\(manifest)), \(count) signature(s)")
            case .alreadySigned:
                print("\(ref.repositoryName)@\(digest) already carries this signature in \(tag); nothing pushed")
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
        throw TrustFailure(description: "--key \(path): \(error)")
    }
}
