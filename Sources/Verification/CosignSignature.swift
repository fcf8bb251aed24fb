import ContentHash
import Foundation
import OCI

/// One legacy-layout cosign signature: a layer of the `sha256-<hex>.sig` image, i.e. the payload blob and the
/// annotations on its descriptor.
public struct CosignSignature: Sendable, Equatable {
    public static let signatureAnnotation = "dev.cosignproject.cosign/signature"
    public static let certificateAnnotation = "dev.sigstore.cosign/certificate"
    public static let chainAnnotation = "dev.sigstore.cosign/chain"
    public static let bundleAnnotation = "dev.sigstore.cosign/bundle"

    /// The layer blob: the exact bytes that were signed.
    public let payload: Data
    /// The layer descriptor's annotations.
    public let annotations: [String: String]

    public init(payload: Data, annotations: [String: String]) {
        self.payload = payload
        self.annotations = annotations
    }

    /// The decoded `dev.cosignproject.cosign/signature`.
    /// - Throws: `malformed` when absent or not base64.
    public func signature() throws(VerificationError) -> Data {
        guard let text = annotations[Self.signatureAnnotation] else {
            throw .malformed(what: "signature layer", reason: "no \(Self.signatureAnnotation) annotation")
        }
        return try decodeBase64(text, what: "signature annotation")
    }

    /// The signing certificate (`dev.sigstore.cosign/certificate`), or `nil` for a key-based signature.
    public func certificate() throws(VerificationError) -> Certificate? {
        guard let pem = annotations[Self.certificateAnnotation], !pem.isEmpty else { return nil }
        return try Certificate(pem: pem)
    }

    /// The chain annotation's certificates (intermediates, then root); empty when absent.
    public func chain() throws(VerificationError) -> [Certificate] {
        guard let pem = annotations[Self.chainAnnotation], !pem.isEmpty else { return [] }
        return try Certificate.parseChain(pem: pem)
    }

    /// The Rekor bundle, or `nil` when the signature was not logged.
    public func bundle() throws(VerificationError) -> RekorBundle? {
        guard let json = annotations[Self.bundleAnnotation], !json.isEmpty else { return nil }
        return try RekorBundle(json: Data(json.utf8))
    }
}

extension CosignSignature {
    /// The tag cosign stores an image's legacy signatures under: `sha256-<hex>.sig`.
    public static func signatureTag(for digest: Digest) -> String { "sha256-\(digest.hex).sig" }

    /// The signatures in a `.sig` manifest: one per simple-signing layer, its blob read by `payload` and checked
    /// against the layer's digest and size (so a registry cannot substitute bytes before verification starts).
    /// Layers of other media types are skipped, as cosign does.
    /// - Parameter payload: fetches a layer blob (the caller bounds its size by `descriptor.size`).
    /// - Throws: `malformed` when a blob does not match its descriptor; whatever `payload` throws.
    public static func signatures(in manifest: Manifest, payload: (Descriptor) throws -> Data) throws
        -> [CosignSignature]
    {
        try manifest.layers.filter { $0.mediaType == SimpleSigningPayload.mediaType }.map { layer in
            try CosignSignature(layer: layer, payload: try payload(layer))
        }
    }

    /// The signature of one simple-signing layer, its blob checked against the layer's digest and size.
    /// - Throws: `malformed` when `payload` does not match `layer`.
    public init(layer: Descriptor, payload: Data) throws(VerificationError) {
        guard Int64(payload.count) == layer.size, SHA256Hasher.digest(payload) == layer.digest else {
            throw .malformed(
                what: "signature layer \(layer.digest.short)", reason: "blob does not match its descriptor")
        }
        self.init(payload: payload, annotations: layer.annotations ?? [:])
    }
}

extension CosignSignature {
    /// A legacy-layout signature as `cosign sign --key --tlog-upload=false` makes it: the Go-marshalled payload and
    /// its signature in `dev.cosignproject.cosign/signature` (ECDSA signatures are randomised: bytes differ per call).
    /// - Parameters:
    ///   - digest: the manifest digest being signed.
    ///   - reference: the repository as cosign names it in `docker-reference`.
    ///   - annotations: `-a key=value` pairs for the payload's `optional` map.
    ///   - key: the signing key.
    public static func sign(
        digest: Digest, reference: String, annotations: [String: String] = [:], key: PrivateKey
    ) throws(VerificationError) -> CosignSignature {
        let payload = SimpleSigningPayload.make(digest: digest, reference: reference, annotations: annotations)
        let signature = try key.sign(payload)
        return CosignSignature(
            payload: payload, annotations: [signatureAnnotation: signature.base64EncodedString()])
    }
}
