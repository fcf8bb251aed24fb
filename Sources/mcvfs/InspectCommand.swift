import ArgumentParser
import Foundation
import OCI
import Registry

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show an image's manifest digest, media types, labels and layers.")

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "REGISTRY/REPOSITORY[:TAG|@DIGEST]") var reference: String

    struct Output: Encodable {
        struct Blob: Encodable {
            var digest: String
            var mediaType: String
            var size: Int64
            var annotations: [String: String]?
        }

        var reference: String
        var digest: String
        var mediaType: String
        var config: Blob?
        var labels: [String: String]?
        var targets: [String]?
        var layers: [Blob]?
        var manifests: [Blob]?
    }

    func run() throws {
        try runReportingErrors(global) {
            let ref = try ImageReference(parsing: reference)
            let client = try global.client(for: ref)
            let fetched: FetchedManifest
            do {
                fetched = try client.getManifest(repository: ref.repository, reference: ref.reference)
            } catch RegistryError.notFound(let diagnostics) where ref.isRepositoryOnly {
                throw InspectError.noLatestTag(
                    repository: "\(ref.registry)/\(ref.repository)", diagnostics: diagnostics)
            }
            var output = Output(
                reference: ref.description, digest: fetched.digest.description, mediaType: fetched.mediaType)
            switch fetched.document {
            case .index(let index):
                output.manifests = index.manifests.map(Self.blob)
            case .manifest(let manifest):
                let configData = try client.getBlob(repository: ref.repository, digest: manifest.config.digest)
                let config = try ImageConfig(parsing: configData)
                output.config = Self.blob(manifest.config)
                output.labels = config.labels
                output.targets = CacheLabels(config.labels).targets?.map(\.description)
                output.layers = manifest.layers.map(Self.blob)
            }
            if json { try printJSON(output) } else { printText(output) }
        }
    }

    enum InspectError: Error, Equatable, CustomStringConvertible {
        /// A reference without a tag or digest names `latest`, which `repository` (`REGISTRY/REPOSITORY`) lacks.
        case noLatestTag(repository: String, diagnostics: RegistryError.Diagnostics)

        var description: String {
            switch self {
            case .noLatestTag(let repository, let diagnostics):
                return "\(repository) has no tag 'latest' (\(diagnostics)): name one, or run `mcvfs ls \(repository)` "
                    + "to list its images"
            }
        }
    }

    private static func blob(_ descriptor: Descriptor) -> Output.Blob {
        Output.Blob(
            digest: descriptor.digest.description, mediaType: descriptor.mediaType, size: descriptor.size,
            annotations: descriptor.annotations)
    }

    private func printText(_ output: Output) {
        print("Reference:  \(output.reference)")
        print("Digest:     \(output.digest)")
        print("Media type: \(output.mediaType)")
        if let config = output.config { print("Config:     \(config.digest) (\(config.mediaType), \(config.size) B)") }
        if let targets = output.targets { print("Targets:    \(targets.joined(separator: ", "))") }
        if let labels = output.labels, !labels.isEmpty {
            print("Labels:")
            for (key, value) in labels.sorted(by: { $0.key < $1.key }) { print("  \(key)=\(value)") }
        }
        for (title, blobs) in [("Layers", output.layers), ("Manifests", output.manifests)] {
            guard let blobs else { continue }
            print("\(title):")
            for blob in blobs { print("  \(blob.digest)  \(formatBytes(blob.size))  \(blob.mediaType)") }
        }
    }
}
