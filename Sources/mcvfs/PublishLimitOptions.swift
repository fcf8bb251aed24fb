import ArgumentParser
import Publishing

/// How much a publish takes from the uppers users write: shared by `publish` and `mount --publish-to`.
struct PublishLimitOptions: ParsableArguments {
    @Option(
        help: """
            Refuse an entry holding a file larger than this (group files and kernel metadata: 1M at most); it is \
            reported and the others publish. Sizes as 256M, 1G.
            """)
    var maxFileSize = "256M"

    @Option(
        help: """
            Stop taking entries once this much is staged; the rest wait for the next publish. Sizes as 2G, 512M.
            """)
    var maxPublishSize = "2G"

    func validate() throws { _ = try limits() }

    func limits() throws -> PublishLimits {
        let file = try parsedSize(maxFileSize)
        let publish = try parsedSize(maxPublishSize)
        guard file > 0, publish > 0 else { throw ValidationError("--max-file-size and --max-publish-size must be > 0") }
        return PublishLimits(fileBytes: file, publishBytes: publish)
    }
}
