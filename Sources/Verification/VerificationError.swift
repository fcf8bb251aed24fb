import COpenSSL
import Foundation
import OCI

/// Why a signature, key, certificate or transparency-log entry was refused. Every case carries the evidence a
/// user needs to see what failed; none of them is ever a reason to use the image anyway.
public enum VerificationError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The signature does not verify over the payload bytes with the key or certificate at hand.
    case badSignature(key: String)
    /// The payload names another image than the one being verified.
    case digestMismatch(payload: String, expected: Digest)
    /// A required `-a key=value` annotation is absent from the payload's `optional` map, or has another value.
    case missingAnnotation(key: String)
    /// The certificate does not chain to a trusted CA, or lacks what a signing certificate needs.
    case untrustedCertificate(reason: String)
    /// No subject alternative name of the certificate matches the expected identity.
    case identityMismatch(expected: String, actual: [String])
    /// The certificate's OIDC issuer is not the expected one (`nil`: the certificate names none).
    case issuerMismatch(expected: String, actual: String?)
    /// The Rekor signed entry timestamp is missing, malformed, signed by an unknown key, or describes another entry.
    case invalidSET(reason: String)
    /// An inclusion proof or its signed checkpoint does not prove the entry is in a trusted log.
    case invalidInclusionProof(reason: String)
    /// A transparency-log entry records something else than the bundle's signature, signer or content.
    case logEntryMismatch(reason: String)
    /// An RFC 3161 timestamp is malformed, over another signature, or not from a trusted authority in its window.
    case invalidTimestamp(reason: String)
    /// No verified time (a timestamp authority's, or a Rekor v1 integrated time under a valid SET) fixes when a
    /// certificate was used; the reasons the candidates failed.
    case noVerifiedTime(reasons: [String])
    /// A certificate in the chain was not valid at the moment the signature was logged (or verified).
    case certificateExpired(at: Date)
    /// An embedded signed certificate timestamp is missing or does not verify against a trusted CT log.
    case invalidSCT(reason: String)
    /// Input that is not what cosign writes: bad base64, PEM, JSON, DER.
    case malformed(what: String, reason: String)
    /// An encrypted private key that does not open with the password given (or whose bytes were changed).
    case wrongPassword
    /// A DSSE envelope or in-toto statement does not describe the image being verified.
    case invalidAttestation(reason: String)
    /// Every candidate signature failed; the reasons, one per signature, in order.
    case noValidSignature([VerificationError])

    public var description: String {
        switch self {
        case .badSignature(let key): return "signature does not verify with \(key)"
        case .digestMismatch(let payload, let expected):
            return "signed payload names \(payload), not \(expected), the digest being verified"
        case .missingAnnotation(let key): return "required annotation '\(key)' is missing from the signed payload"
        case .untrustedCertificate(let reason): return "untrusted certificate: \(reason)"
        case .identityMismatch(let expected, let actual):
            return "certificate identity \(actual.isEmpty ? "(none)" : actual.joined(separator: ", ")) "
                + "does not match \(expected)"
        case .issuerMismatch(let expected, let actual):
            return "certificate OIDC issuer \(actual ?? "(none)") is not \(expected)"
        case .invalidSET(let reason): return "invalid Rekor signed entry timestamp: \(reason)"
        case .invalidInclusionProof(let reason): return "invalid inclusion proof: \(reason)"
        case .logEntryMismatch(let reason): return "transparency log entry does not match the bundle: \(reason)"
        case .invalidTimestamp(let reason): return "invalid RFC 3161 timestamp: \(reason)"
        case .noVerifiedTime(let reasons):
            let why = reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; ")
            return "no verified time for the signature (neither a trusted timestamp nor a Rekor v1 SET)" + why
        case .certificateExpired(let at):
            return "certificate was not valid at \(at.formatted(.iso8601))"
        case .invalidSCT(let reason): return "invalid signed certificate timestamp: \(reason)"
        case .malformed(let what, let reason): return "malformed \(what): \(reason)"
        case .wrongPassword:
            return "wrong password for the encrypted private key (or the key file was changed): set COSIGN_PASSWORD "
                + "to the password it was generated with"
        case .invalidAttestation(let reason): return "invalid attestation: \(reason)"
        case .noValidSignature(let reasons):
            if reasons.isEmpty { return "no signatures found" }
            return "no valid signature: " + reasons.map(\.description).joined(separator: "; ")
        }
    }
}

/// Turns an OpenSSL status (1 = success) into a `malformed` error carrying OpenSSL's own reason.
@discardableResult
func check(_ status: Int32, _ what: @autoclosure () -> String) throws(VerificationError) -> Int32 {
    guard status == 1 else { throw VerificationError.malformed(what: what(), reason: openSSLErrorText()) }
    return status
}

/// Unwraps an OpenSSL result pointer, or throws `malformed` with OpenSSL's reason.
func check<T>(_ value: T?, _ what: @autoclosure () -> String) throws(VerificationError) -> T {
    guard let value else { throw VerificationError.malformed(what: what(), reason: openSSLErrorText()) }
    return value
}

/// Drains OpenSSL's thread-local error queue into one line (the queue must not leak into the next call).
func openSSLErrorText() -> String {
    var messages: [String] = []
    while true {
        var data: UnsafePointer<CChar>?
        var flags: Int32 = 0
        let code = ERR_get_error_all(nil, nil, nil, &data, &flags)
        if code == 0 { break }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        var message = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // Some reasons carry their detail as data ("Verify error:certificate has expired").
        if flags & ERR_TXT_STRING != 0, let data, data.pointee != 0 { message += " (\(String(cString: data)))" }
        messages.append(message)
    }
    return messages.isEmpty ? "unknown OpenSSL error" : messages.joined(separator: "; ")
}

/// Clears OpenSSL's error queue after an expected failure (a signature that does not verify).
func clearOpenSSLErrors() { ERR_clear_error() }
