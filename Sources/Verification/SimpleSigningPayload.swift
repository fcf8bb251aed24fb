import Foundation
import OCI

/// The "simple signing" payload a legacy cosign signature signs: which image (by manifest digest) under which name.
///
/// Parsed only to read it: signatures are always checked over the stored bytes, never over a re-serialisation.
/// Format: https://github.com/containers/image/blob/main/docs/containers-signature.5.md (cosign's variant uses
/// `type` "cosign container image signature").
public struct SimpleSigningPayload: Sendable, Equatable {
    public static let mediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
    public static let signatureType = "cosign container image signature"

    /// `critical.identity.docker-reference`: the repository (possibly with tag) the signer named.
    public let dockerReference: String
    /// `critical.image.docker-manifest-digest`, as written (it may not even be a valid digest).
    public let dockerManifestDigest: String
    /// `critical.type`.
    public let type: String
    /// `optional`: the annotations given at signing time (`cosign sign -a k=v`); empty when `null` or absent.
    public let optional: [String: JSONValue]

    private struct Wire: Decodable {
        struct Critical: Decodable {
            struct Identity: Decodable {
                let dockerReference: String
                enum CodingKeys: String, CodingKey { case dockerReference = "docker-reference" }
            }
            struct Image: Decodable {
                let dockerManifestDigest: String
                enum CodingKeys: String, CodingKey { case dockerManifestDigest = "docker-manifest-digest" }
            }
            let identity: Identity
            let image: Image
            let type: String
        }
        let critical: Critical
        let optional: [String: JSONValue]?
    }

    /// Parses payload bytes.
    /// - Throws: `VerificationError.malformed` when the JSON lacks a `critical` field or `type` is not cosign's.
    public init(parsing data: Data) throws(VerificationError) {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: data)
        } catch {
            throw .malformed(what: "simple signing payload", reason: "\(error)")
        }
        guard wire.critical.type == Self.signatureType else {
            throw .malformed(what: "simple signing payload", reason: "type is '\(wire.critical.type)'")
        }
        dockerReference = wire.critical.identity.dockerReference
        dockerManifestDigest = wire.critical.image.dockerManifestDigest
        type = wire.critical.type
        optional = wire.optional ?? [:]
    }

    /// The payload bytes `cosign sign` writes: Go's compact `json.Marshal` of cosign's `SimpleContainerImage`
    /// (fields in declaration order, map keys sorted, HTML-safe escaping, `"optional":null` when there are no
    /// annotations).
    /// - Parameters:
    ///   - digest: the manifest digest being signed.
    ///   - reference: the repository as cosign names it (`registry/repo`, no tag or digest).
    ///   - annotations: `-a key=value` pairs, written into `optional`.
    public static func make(digest: Digest, reference: String, annotations: [String: String] = [:]) -> Data {
        var text = "{\"critical\":{\"identity\":{\"docker-reference\":" + JSONText.goString(reference) + "},"
        text += "\"image\":{\"docker-manifest-digest\":" + JSONText.goString(digest.description) + "},"
        text += "\"type\":" + JSONText.goString(signatureType) + "},\"optional\":"
        if annotations.isEmpty {
            text += "null"
        } else {
            // Go sorts map keys by their UTF-8 bytes.
            let keys = annotations.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            text +=
                "{"
                + keys.map { JSONText.goString($0) + ":" + JSONText.goString(annotations[$0]!) }
                .joined(separator: ",") + "}"
        }
        return Data((text + "}").utf8)
    }

    /// Throws unless the payload names `digest`.
    public func requireDigest(_ digest: Digest) throws(VerificationError) {
        guard dockerManifestDigest == digest.description else {
            throw .digestMismatch(payload: dockerManifestDigest, expected: digest)
        }
    }

    /// Throws unless every `required` annotation appears in `optional` with exactly that string value
    /// (cosign compares `optional[key]` to the wanted string, so a number or bool never matches).
    public func requireAnnotations(_ required: [String: String]) throws(VerificationError) {
        for key in required.keys.sorted() where optional[key] != .string(required[key]!) {
            throw .missingAnnotation(key: key)
        }
    }
}
