import Foundation

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
