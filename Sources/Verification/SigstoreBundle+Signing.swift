import Foundation
import OCI

extension SigstoreBundle {
    /// The media type of the bundles cosign v3 writes.
    public static let mediaTypeV03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
    /// The predicate of a cosign v3 image signature; other bundles about an image are attestations.
    public static let imageSignaturePredicate = "https://sigstore.dev/cosign/sign/v1"

    /// The in-toto statement `cosign sign` (v3) signs for an image: one subject, the manifest digest, carrying the
    /// `-a key=value` pairs as its annotations; the predicate is empty.
    public static func imageStatement(digest: Digest, annotations: [String: String] = [:]) -> Data {
        var subject = #"{"digest":{"sha256":"\#(digest.hex)"}"#
        if !annotations.isEmpty {
            let keys = annotations.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            subject +=
                #","annotations":{"#
                + keys.map { JSONText.goString($0) + ":" + JSONText.goString(annotations[$0]!) }.joined(separator: ",")
                + "}"
        }
        subject += "}"
        let text =
            #"{"_type":"https://in-toto.io/Statement/v1","subject":[\#(subject)],"#
            + #""predicateType":"\#(imageSignaturePredicate)","predicate":{}}"#
        return Data(text.utf8)
    }

    /// A v0.3 bundle signing the image `digest` as `cosign sign --key --tlog-upload=false` (cosign v3) makes it: the
    /// key's hint (base64 of SHA-256 of its SubjectPublicKeyInfo), no log entries, and a DSSE envelope over the
    /// image statement. ECDSA signatures are randomised, so each call gives other bytes.
    /// - Returns: the bundle's JSON, as it is stored in the referrer's layer.
    public static func signImage(digest: Digest, annotations: [String: String] = [:], key: PrivateKey)
        throws(VerificationError) -> Data
    {
        let envelope = DSSEEnvelope(
            payload: imageStatement(digest: digest, annotations: annotations),
            payloadType: DSSEEnvelope.inTotoPayloadType, signatures: [])
        let signature = try key.sign(envelope.preAuthenticationEncoding, hash: key.publicKey.naturalHash)
        let hint = Data(hex: key.publicKey.fingerprint)!.base64EncodedString()
        let text =
            #"{"mediaType":"\#(mediaTypeV03)","verificationMaterial":{"publicKey":{"hint":"\#(hint)"}},"#
            + #""dsseEnvelope":{"payload":"\#(envelope.payload.base64EncodedString())","#
            + #""payloadType":"\#(envelope.payloadType)","signatures":[{"sig":"\#(signature.base64EncodedString())"}]}}"#
        return Data(text.utf8)
    }
}
