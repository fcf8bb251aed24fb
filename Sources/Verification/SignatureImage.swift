import ContentHash
import Foundation
import OCI

/// The legacy-layout signature image (tag `sha256-<hex>.sig`) as cosign builds it with go-containerregistry:
/// an OCI manifest over a config whose `rootfs.diff_ids` and `history` grow by one per signature layer, each layer
/// a simple-signing payload with its signature in the descriptor's annotations.
///
/// Pure values: `RegistryClient` moves the bytes. The JSON is written in Go's field order, so a `.sig` image mcvfs
/// makes is byte-identical to what `cosign sign --key --tlog-upload=false` makes for the same signature (ECDSA
/// signatures are randomised, so "the same signature" means the same annotation value).
public struct SignatureImage: Sendable, Equatable {
    /// The config of a signature image with no signature yet (go-containerregistry's `empty.Image`).
    public static let zeroTime = "0001-01-01T00:00:00Z"

    public var manifest: Manifest
    /// The config blob's bytes, as they will be uploaded.
    public var config: Data
    /// Payload blobs, by digest, for the layers added since this value was made (the others are in the registry).
    public var newBlobs: [Digest: Data] = [:]

    /// A signature image without signatures: OCI manifest and config media types, as cosign uses by default.
    public init() {
        let config = ConfigFile()
        self.config = config.json
        manifest = Manifest(
            mediaType: MediaType.ociManifest,
            config: Descriptor(
                mediaType: MediaType.ociConfig, digest: SHA256Hasher.digest(self.config), size: Int64(self.config.count)
            ),
            layers: [])
    }

    /// An existing signature image: its manifest and config as the registry has them.
    /// - Throws: `malformed` when the config is not an image config.
    public init(manifest: Manifest, config: Data) throws(VerificationError) {
        self.manifest = manifest
        self.config = config
        _ = try ConfigFile(parsing: config)
    }

    /// The manifest bytes, as go-containerregistry serialises a `v1.Manifest`.
    public var manifestData: Data { Data(Self.manifestJSON(manifest).utf8) }

    /// The signatures already in the image whose payload blobs `payload` can read (see `CosignSignature.signatures`).
    public func signatures(payload: (Descriptor) throws -> Data) throws -> [CosignSignature] {
        try CosignSignature.signatures(in: manifest, payload: payload)
    }

    /// Appends `signature` as cosign's `mutate.AppendSignatures` does: one more layer (media type simple-signing,
    /// digest and size of the payload, the signature's annotations), the payload's digest appended to
    /// `rootfs.diff_ids` and an empty history entry to `history`; existing layers are kept as they are.
    public mutating func append(_ signature: CosignSignature) throws(VerificationError) {
        var file = try ConfigFile(parsing: config)
        let digest = SHA256Hasher.digest(signature.payload)
        file.diffIDs.append(digest.description)
        file.history.append(ConfigFile.History())
        config = file.json
        manifest.config.digest = SHA256Hasher.digest(config)
        manifest.config.size = Int64(config.count)
        manifest.layers.append(
            Descriptor(
                mediaType: SimpleSigningPayload.mediaType, digest: digest, size: Int64(signature.payload.count),
                annotations: signature.annotations.isEmpty ? nil : signature.annotations))
        newBlobs[digest] = signature.payload
    }

    /// The layer among `existing` that already holds `signature`, as cosign's duplicate detector decides: same
    /// payload digest and media type, every non-signature annotation of the new one present with the same value,
    /// and an existing signature that verifies over the payload with `key`. cosign then leaves the image as it is.
    public static func duplicate(of signature: CosignSignature, in existing: [CosignSignature], key: PublicKey)
        -> CosignSignature?
    {
        let digest = SHA256Hasher.digest(signature.payload)
        return existing.first { candidate in
            guard SHA256Hasher.digest(candidate.payload) == digest else { return false }
            for (name, value) in signature.annotations where name != CosignSignature.signatureAnnotation {
                guard candidate.annotations[name] == value else { return false }
            }
            guard let bytes = try? candidate.signature() else { return false }
            return (try? key.isValidSignature(bytes, over: candidate.payload)) == true
        }
    }

    // MARK: - Go-compatible JSON

    static func manifestJSON(_ manifest: Manifest) -> String {
        var fields = ["\"schemaVersion\":\(manifest.schemaVersion)"]
        if let mediaType = manifest.mediaType, !mediaType.isEmpty {
            fields.append("\"mediaType\":" + JSONText.goString(mediaType))
        }
        fields.append("\"config\":" + descriptorJSON(manifest.config))
        fields.append("\"layers\":[" + manifest.layers.map(descriptorJSON).joined(separator: ",") + "]")
        if let annotations = manifest.annotations, !annotations.isEmpty {
            fields.append("\"annotations\":" + mapJSON(annotations))
        }
        if let subject = manifest.subject { fields.append("\"subject\":" + descriptorJSON(subject)) }
        return "{" + fields.joined(separator: ",") + "}"
    }

    /// go-containerregistry `v1.Descriptor`: mediaType, size, digest, urls, annotations, platform, artifactType.
    static func descriptorJSON(_ descriptor: Descriptor) -> String {
        var fields = [
            "\"mediaType\":" + JSONText.goString(descriptor.mediaType), "\"size\":\(descriptor.size)",
            "\"digest\":" + JSONText.goString(descriptor.digest.description),
        ]
        if let urls = descriptor.urls, !urls.isEmpty {
            fields.append("\"urls\":[" + urls.map(JSONText.goString).joined(separator: ",") + "]")
        }
        if let annotations = descriptor.annotations, !annotations.isEmpty {
            fields.append("\"annotations\":" + mapJSON(annotations))
        }
        if let platform = descriptor.platform {
            var parts = [
                "\"architecture\":" + JSONText.goString(platform.architecture),
                "\"os\":" + JSONText.goString(platform.os),
            ]
            if let variant = platform.variant, !variant.isEmpty {
                parts.append("\"variant\":" + JSONText.goString(variant))
            }
            fields.append("\"platform\":{" + parts.joined(separator: ",") + "}")
        }
        if let artifactType = descriptor.artifactType, !artifactType.isEmpty {
            fields.append("\"artifactType\":" + JSONText.goString(artifactType))
        }
        return "{" + fields.joined(separator: ",") + "}"
    }

    /// A Go `map[string]string`: keys sorted by bytes.
    static func mapJSON(_ map: [String: String]) -> String {
        let keys = map.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        return "{" + keys.map { JSONText.goString($0) + ":" + JSONText.goString(map[$0]!) }.joined(separator: ",") + "}"
    }
}

/// The parts of go-containerregistry's `v1.ConfigFile` a signature image uses, re-serialised in its field order.
/// Fields it does not model survive only inside `config` (as cosign's round trip through the Go struct would drop
/// unknown top-level fields too).
struct ConfigFile {
    struct History {
        var author: String?
        var created: String = SignatureImage.zeroTime
        var createdBy: String?
        var comment: String?
        var emptyLayer: Bool = false

        var json: String {
            var fields: [String] = []
            if let author, !author.isEmpty { fields.append("\"author\":" + JSONText.goString(author)) }
            fields.append("\"created\":" + JSONText.goString(created))
            if let createdBy, !createdBy.isEmpty { fields.append("\"created_by\":" + JSONText.goString(createdBy)) }
            if let comment, !comment.isEmpty { fields.append("\"comment\":" + JSONText.goString(comment)) }
            if emptyLayer { fields.append("\"empty_layer\":true") }
            return "{" + fields.joined(separator: ",") + "}"
        }
    }

    var architecture = ""
    var author: String?
    var created = SignatureImage.zeroTime
    var history: [History] = []
    var os = ""
    var rootFSType = "layers"
    var diffIDs: [String] = []
    var config: [String: JSONValue] = [:]

    init() {}

    init(parsing data: Data) throws(VerificationError) {
        struct Wire: Decodable {
            struct Entry: Decodable {
                var author: String?
                var created: String?
                var createdBy: String?
                var comment: String?
                var emptyLayer: Bool?

                enum CodingKeys: String, CodingKey {
                    case author, created, comment
                    case createdBy = "created_by"
                    case emptyLayer = "empty_layer"
                }
            }
            struct RootFS: Decodable {
                var type: String?
                var diffIDs: [String]?

                enum CodingKeys: String, CodingKey {
                    case type
                    case diffIDs = "diff_ids"
                }
            }
            var architecture: String?
            var author: String?
            var created: String?
            var history: [Entry]?
            var os: String?
            var rootfs: RootFS?
            var config: [String: JSONValue]?
        }
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: data)
        } catch {
            throw .malformed(what: "signature image config", reason: "\(error)")
        }
        architecture = wire.architecture ?? ""
        author = wire.author
        created = wire.created ?? SignatureImage.zeroTime
        history = (wire.history ?? []).map {
            History(
                author: $0.author, created: $0.created ?? SignatureImage.zeroTime, createdBy: $0.createdBy,
                comment: $0.comment, emptyLayer: $0.emptyLayer ?? false)
        }
        os = wire.os ?? ""
        rootFSType = wire.rootfs?.type ?? "layers"
        diffIDs = wire.rootfs?.diffIDs ?? []
        config = wire.config ?? [:]
    }

    var json: Data {
        var fields = ["\"architecture\":" + JSONText.goString(architecture)]
        if let author, !author.isEmpty { fields.append("\"author\":" + JSONText.goString(author)) }
        fields.append("\"created\":" + JSONText.goString(created))
        if !history.isEmpty { fields.append("\"history\":[" + history.map(\.json).joined(separator: ",") + "]") }
        fields.append("\"os\":" + JSONText.goString(os))
        var rootFS = "{\"type\":" + JSONText.goString(rootFSType)
        if !diffIDs.isEmpty {
            rootFS += ",\"diff_ids\":[" + diffIDs.map(JSONText.goString).joined(separator: ",") + "]"
        }
        fields.append("\"rootfs\":" + rootFS + "}")
        fields.append("\"config\":" + JSONValue.object(config).goJSON)
        return Data(("{" + fields.joined(separator: ",") + "}").utf8)
    }
}

extension JSONValue {
    /// Compact JSON with sorted keys and Go's string escaping (integral numbers without a fraction).
    var goJSON: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let value):
            return value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        case .string(let value): return JSONText.goString(value)
        case .array(let values): return "[" + values.map(\.goJSON).joined(separator: ",") + "]"
        case .object(let map):
            let keys = map.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            return "{" + keys.map { JSONText.goString($0) + ":" + map[$0]!.goJSON }.joined(separator: ",") + "}"
        }
    }
}
