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

    /// The one policy every client of this process follows (stall limit, tries per role, the mount's budget).
    var registryPolicy: RegistryPolicy { RegistryPolicy(stall: duration(seconds: timeout)) }

    func client(for reference: ImageReference, role: RegistryPolicy.Role = .command) throws -> RegistryClient {
        try connect(reference, registryPolicy.options(role, plainHTTP: plainHTTP))
    }

    /// How this process makes a client: credentials from `--creds` or the auth files, TLS with `--ca-file`.
    var connect: @Sendable (ImageReference, RegistryOptions) throws -> RegistryClient {
        { [creds, caFile] reference, options in
            let credentials = try CredentialStore().resolve(
                explicit: creds, registry: reference.registry, repository: reference.repository)
            return try RegistryClient(
                registry: reference.registry, transport: try CurlTransport(configuration: .init(caFile: caFile)),
                credentials: credentials, options: options)
        }
    }
}

extension Log.Level: ExpressibleByArgument {}
