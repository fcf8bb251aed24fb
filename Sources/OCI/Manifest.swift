import Foundation

/// An image manifest (OCI or Docker schema 2; they share this shape).
public struct Manifest: Sendable, Hashable, Codable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(
        mediaType: String? = MediaType.ociManifest, config: Descriptor, layers: [Descriptor],
        annotations: [String: String]? = nil
    ) {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

/// An image index or Docker manifest list.
public struct Index: Sendable, Hashable, Codable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
    public var annotations: [String: String]?

    public init(mediaType: String? = MediaType.ociIndex, manifests: [Descriptor], annotations: [String: String]? = nil)
    {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.manifests = manifests
        self.annotations = annotations
    }
}

/// A manifest document as fetched: either an image manifest or an index, told apart by media type
/// (the `Content-Type` header, else the document's own `mediaType`, else its shape).
public enum ManifestDocument: Sendable, Hashable {
    case manifest(Manifest)
    case index(Index)

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case notJSON(String)
        case unsupportedMediaType(String)
        case invalid(mediaType: String, reason: String)

        public var description: String {
            switch self {
            case .notJSON(let why): return "manifest is not a JSON object: \(why)"
            case .unsupportedMediaType(let t): return "unsupported manifest media type '\(t)'"
            case .invalid(let t, let why): return "malformed \(t) document: \(why)"
            }
        }
    }

    public init(parsing data: Data, contentType: String? = nil) throws {
        let object: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ParseError.notJSON("top level is not an object")
            }
            object = parsed
        } catch let error as ParseError {
            throw error
        } catch {
            throw ParseError.notJSON(String(describing: error))
        }
        let declared = (object["mediaType"] as? String) ?? Self.normalised(contentType)
        let type: String
        if let declared {
            type = declared
        } else if object["manifests"] != nil {
            type = MediaType.ociIndex
        } else if object["config"] != nil {
            type = MediaType.ociManifest
        } else {
            throw ParseError.invalid(mediaType: "manifest", reason: "neither 'config' nor 'manifests' present")
        }
        if let schema = object["schemaVersion"] as? Int, schema != 2 {
            throw ParseError.invalid(mediaType: type, reason: "schemaVersion \(schema) (only 2 is supported)")
        }
        do {
            if MediaType.isIndex(type) {
                self = .index(try JSONDecoder().decode(Index.self, from: data))
            } else if MediaType.isManifest(type) {
                self = .manifest(try JSONDecoder().decode(Manifest.self, from: data))
            } else {
                throw ParseError.unsupportedMediaType(type)
            }
        } catch let error as ParseError {
            throw error
        } catch {
            throw ParseError.invalid(mediaType: type, reason: Self.explain(error))
        }
    }

    private static func normalised(_ contentType: String?) -> String? {
        guard let contentType else { return nil }
        let bare = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        return MediaType.isIndex(bare) || MediaType.isManifest(bare) ? bare : nil
    }

    static func explain(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "missing field '\(path(context.codingPath + [key]))'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "wrong type at '\(path(context.codingPath))'"
        case DecodingError.dataCorrupted(let context):
            return
                "bad value at '\(path(context.codingPath))': \(context.underlyingError.map { "\($0)" } ?? context.debugDescription)"
        default:
            return String(describing: error)
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
}
