import ArgumentParser
import MetricsEndpoint
import MountService
import NodeService

/// `mount` options for running as a node service: metrics, a cache bound, a mirror, offline mode.
struct ServiceOptions: ParsableArguments {
    @Option(
        help: "Serve Prometheus metrics at http://ADDRESS/metrics (IPv4:PORT, e.g. 127.0.0.1:9400). Off by default.")
    var metricsListen: String?

    @Option(
        help: """
            Keep the blob cache at most this big (e.g. 2G; units are powers of 1024), evicting least recently \
            used layers no running mount needs.
            """
    )
    var cacheMaxSize: String?

    @Option(
        help: """
            A registry mirror (HOST[:PORT]) holding the same repository; tried first for reads, the origin is \
            used when it fails.
            """
    )
    var mirror: String?

    @Flag(
        help: """
            Never contact a registry: resolve tags from the catalog recorded by the last online mount (or fetch) \
            and serve only layers already in the cache.
            """
    )
    var offline = false

    func validate() throws {
        if offline && mirror != nil { throw ValidationError("--offline and --mirror exclude each other") }
        if let cacheMaxSize { _ = try parsedSize(cacheMaxSize) }
        if let metricsListen {
            do { _ = try MetricsServer.Address(parsing: metricsListen) } catch { throw ValidationError("\(error)") }
        }
    }

    var maxSize: Int64? { cacheMaxSize.flatMap { try? parsedSize($0) } }

    var metricsAddress: MetricsServer.Address? { metricsListen.flatMap { try? MetricsServer.Address(parsing: $0) } }

    /// Where the mount reads the repository from.
    var source: MountConfiguration.Registries.Source {
        offline ? .offline : mirror.map { .mirrored(host: $0) } ?? .origin
    }
}

/// Seconds given on the command line as a duration, to the millisecond (rounded: 1.001 stays 1.001).
func duration(seconds: Double) -> Duration { .milliseconds(Int64((seconds * 1000).rounded())) }

func parsedSize(_ text: String) throws -> Int64 {
    do { return try ByteSize.parse(text) } catch { throw ValidationError("\(error)") }
}
