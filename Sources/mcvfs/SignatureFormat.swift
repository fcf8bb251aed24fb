import ArgumentParser
import Trust

/// `--signature-format`: the layouts every signing command writes (`sign`, `push`, `convert`, `publish`, `compact`,
/// `mount --publish-to`), both by default so that cosign v2, cosign v3 and containers/image verifiers all find it.
enum SignatureFormat: String, ExpressibleByArgument, CaseIterable {
    case bundle, legacy, both

    static let help = ArgumentHelp(
        "Signature layouts to write: bundle (Sigstore bundle referrer, cosign v3), legacy (the .sig image, cosign "
            + "v1/v2), or both (default).")

    var formats: Set<ImageSigner.Format> {
        switch self {
        case .bundle: return [.bundle]
        case .legacy: return [.legacy]
        case .both: return [.legacy, .bundle]
        }
    }
}
