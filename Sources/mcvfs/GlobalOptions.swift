import ArgumentParser
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

    @OptionGroup var cache: CacheDirectoryOptions

    @Option(help: "Seconds a registry may stall (connect, or no bytes arriving) before a request fails.")
    var timeout: Double = 10

    @Option(help: "Log level: error, warning, info, debug.")
    var logLevel: Log.Level = .warning

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
