import ArgumentParser
import BlobCache
import CurlTransport
import Foundation
import OCI
import Registry

/// Options every registry-facing command takes, written after the subcommand.
struct GlobalOptions: ParsableArguments {
    @Flag(help: "Talk HTTP instead of HTTPS to the registry (local registries).")
    var plainHTTP = false

    @Option(help: "PEM file of CA certificates to trust in addition to the system store.")
    var caFile: String?

    @Option(help: "Registry credentials as user:password (else auth files and credential helpers are used).")
    var creds: String?

    @Option(
        help:
            "Local cache directory (default: /var/lib/mcvfs as root, else $XDG_CACHE_HOME/mcvfs; or $MCVFS_CACHE_DIR).")
    var cacheDir: String?

    @Option(help: "Seconds a registry may stall (connect, or no bytes arriving) before a request fails.")
    var timeout: Double = 10

    @Option(help: "Log level: error, warning, info, debug.")
    var logLevel: Log.Level = .warning

    func cacheRoot() throws -> URL {
        guard let path = CacheDirectory.resolve(explicit: cacheDir) else {
            throw ValidationError("no cache directory: HOME is unset; pass --cache-dir or set MCVFS_CACHE_DIR")
        }
        return URL(fileURLWithPath: path)
    }

    func store() throws -> DirectoryBlobStore {
        try DirectoryBlobStore(root: try cacheRoot())
    }

    func client(for reference: ImageReference, attempts: Int = 3) throws -> RegistryClient {
        let credentials = try CredentialStore().resolve(
            explicit: creds, registry: reference.registry, repository: reference.repository)
        let stall = Duration.milliseconds(Int64(timeout * 1000))
        let timeouts = HTTPTimeouts(connect: stall, total: stall * 6, stall: stall)
        var streaming = timeouts
        streaming.total = nil
        let options = RegistryOptions(
            plainHTTP: plainHTTP, retry: RetryPolicy(attempts: attempts), timeouts: timeouts,
            streamingTimeouts: streaming)
        return try RegistryClient(
            registry: reference.registry, transport: try CurlTransport(configuration: .init(caFile: caFile)),
            credentials: credentials,
            options: options)
    }
}

extension Log.Level: ExpressibleByArgument {}
