import Foundation

/// The parts of an image configuration mcvfs reads: labels, and enough of the rest to describe the image.
public struct ImageConfig: Sendable, Hashable, Codable {
    public var architecture: String?
    public var os: String?
    public var created: String?
    public var config: Settings?
    public var rootfs: RootFS?

    public struct Settings: Sendable, Hashable, Codable {
        public var Labels: [String: String]?
        public init(labels: [String: String]?) { self.Labels = labels }
    }

    public struct RootFS: Sendable, Hashable, Codable {
        public var type: String
        public var diff_ids: [Digest]
    }

    public init(labels: [String: String]) {
        self.config = Settings(labels: labels)
    }

    public var labels: [String: String] { config?.Labels ?? [:] }

    public init(parsing data: Data) throws {
        do {
            self = try JSONDecoder().decode(ImageConfig.self, from: data)
        } catch {
            throw ManifestDocument.ParseError.invalid(
                mediaType: "image config", reason: ManifestDocument.explain(error))
        }
    }
}
