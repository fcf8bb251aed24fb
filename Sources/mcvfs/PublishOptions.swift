import ArgumentParser
import OCI
import Publishing
import Registry

/// How published images are tagged and signed: shared by `publish`, `compact` and `mount --publish-to`.
struct PublishOptions: ParsableArguments {
    @Option(
        name: .customLong("sign-key"),
        help: """
            Sign each image pushed with this cosign.key, as `mcvfs sign` does (both layouts unless \
            --signature-format says otherwise; password from COSIGN_PASSWORD, else a prompt; a daemon needs \
            COSIGN_PASSWORD). Consumers' --key or --policy decide whether they accept it. Default: $MCVFS_SIGN_KEY \
            (empty: unsigned).
            """)
    var signKeyOption: String?

    @Option(help: SignatureFormat.help) var signatureFormat: SignatureFormat = .both

    /// `--sign-key`, else `MCVFS_SIGN_KEY`.
    var signKey: String? { setting(signKeyOption, "MCVFS_SIGN_KEY") }

    @Option(help: "First part of the tags images get: PREFIX-<target>-<first 16 hex digits of the digest>.")
    var tagPrefix: String = FleetTag.defaultPrefix

    func validate() throws {
        guard FleetTag.isValidPrefix(tagPrefix) else {
            throw ValidationError("--tag-prefix '\(tagPrefix)': letters, digits, '_', '.', '-', at most 64")
        }
    }

    /// The signing key, read (and its password asked) before anything is pushed, so a wrong password leaves nothing
    /// unsigned behind.
    func signing(for reference: ImageReference) throws -> ImagePublisher.Signing? {
        try signKey.map { path in
            ImagePublisher.Signing(
                key: try loadPrivateKey(path: path), dockerReference: SignCommand.dockerReference(reference),
                formats: signatureFormat.formats)
        }
    }

    func publisher(
        _ reference: ImageReference, client: RegistryClient, signing: ImagePublisher.Signing?, dryRun: Bool = false,
        created: String? = nil, labels: [String: String] = [:]
    ) -> ImagePublisher {
        ImagePublisher(
            client: client, repository: reference.repository,
            options: publishing(signing: signing, dryRun: dryRun, created: created, labels: labels))
    }

    /// How images are tagged and signed, as these options say.
    func publishing(
        signing: ImagePublisher.Signing?, dryRun: Bool = false, created: String? = nil, labels: [String: String] = [:]
    ) -> ImagePublisher.Options {
        .init(prefix: tagPrefix, signing: signing, dryRun: dryRun, created: created, labels: labels)
    }
}
