import Foundation

/// The parts of an image configuration mcvfs reads: labels, and enough of the rest to describe the image.
public struct ImageConfig: Sendable, Hashable, Codable {
    public var architecture: String?
    public var os: String?
    public var created: String?
    public var config: Settings?
    public var rootfs: RootFS?

    public struct Settings: Sendable, Hashable, Codable {
        public var labels: [String: String]?
        public init(labels: [String: String]?) { self.labels = labels }

        private enum CodingKeys: String, CodingKey {
            case labels = "Labels"
        }
    }

    public struct RootFS: Sendable, Hashable, Codable {
        public var type: String
        public var diffIDs: [Digest]

        private enum CodingKeys: String, CodingKey {
            case type
            case diffIDs = "diff_ids"
        }
    }

    public init(labels: [String: String]) {
        self.config = Settings(labels: labels)
    }

    /// A config for an image of layers, as image builders write one.
    public init(architecture: String, os: String, created: String?, labels: [String: String], diffIDs: [Digest]) {
        self.architecture = architecture
        self.os = os
        self.created = created
        self.config = Settings(labels: labels)
        self.rootfs = RootFS(type: "layers", diffIDs: diffIDs)
    }

    public var labels: [String: String] { config?.labels ?? [:] }

    public init(parsing data: Data) throws {
        do {
            self = try JSONDecoder().decode(ImageConfig.self, from: data)
        } catch {
            throw ManifestDocument.ParseError.invalid(
                mediaType: "image config", reason: ManifestDocument.explain(error))
        }
    }
}
