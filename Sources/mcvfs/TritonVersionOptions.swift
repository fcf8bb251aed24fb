import ArgumentParser
import Foundation
import OCI

/// `--triton-version VERSION` (else `$MCVFS_TRITON_VERSION`): use only the images whose kernels that Triton
/// version compiled, and those that do not say.
struct TritonVersionOptions: ParsableArguments {
    static let environmentVariable = "MCVFS_TRITON_VERSION"

    @Option(
        name: .customLong("triton-version"),
        help: ArgumentHelp(
            """
            Use only images compiled by this Triton version (their model.cache.image/triton-version label), and \
            images without the label: a cache key includes Triton's version, so others can never hit. Default: \
            $MCVFS_TRITON_VERSION.
            """, valueName: "version"))
    var option: String?

    var version: String? {
        let value = option ?? ProcessInfo.processInfo.environment[Self.environmentVariable]
        return value.flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
    }

    func apply(to catalog: inout Catalog) {
        guard let version else { return }
        catalog.keepOnly(tritonVersion: version.trimmingCharacters(in: .whitespaces))
    }
}
