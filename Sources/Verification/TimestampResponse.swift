import COpenSSL
import ContentHash
import Foundation

/// An RFC 3161 `TimeStampResp`: a timestamp authority's signed statement that it saw a hash at `generationTime`.
/// Sigstore bundles carry them over the signature (`timestampVerificationData`); for Rekor v2 entries, which have
/// no integrated time, they are the only evidence of when the signing certificate was used.
/// https://www.rfc-editor.org/rfc/rfc3161
public struct TimestampResponse: Sendable, Equatable {
    public let der: Data
    /// `TSTInfo.genTime`, with its fraction of a second.
    public let generationTime: Date
    public let imprintHash: PublicKey.HashAlgorithm
    public let imprint: Data

    /// Parses the response and its token's `TSTInfo`.
    /// - Throws: `VerificationError.invalidTimestamp` for a response that is not a granted, well-formed token.
    public init(der: Data) throws(VerificationError) {
        let response = try TimestampResponseHandle(der: der)
        guard let status = TS_RESP_get_status_info(response.pointer),
            let code = TS_STATUS_INFO_get0_status(status), [0, 1].contains(ASN1_INTEGER_get(code))
        else { throw .invalidTimestamp(reason: "the timestamp authority did not grant the request") }
        guard let info = TS_RESP_get_tst_info(response.pointer), TS_RESP_get_token(response.pointer) != nil else {
            throw .invalidTimestamp(reason: "response has no timestamp token")
        }
        guard TS_TST_INFO_get_version(info) == 1 else { throw .invalidTimestamp(reason: "TSTInfo version is not 1") }
        guard let imprint = TS_TST_INFO_get_msg_imprint(info), let algorithm = TS_MSG_IMPRINT_get_algo(imprint) else {
            throw .invalidTimestamp(reason: "token has no message imprint")
        }
        var object: OpaquePointer?
        X509_ALGOR_get0(&object, nil, nil, algorithm)
        switch dottedOID(object) {
        case "2.16.840.1.101.3.4.2.1": imprintHash = .sha256
        case "2.16.840.1.101.3.4.2.2": imprintHash = .sha384
        case "2.16.840.1.101.3.4.2.3": imprintHash = .sha512
        case let other: throw .invalidTimestamp(reason: "message imprint hash \(other) is not SHA-2")
        }
        self.imprint = asn1Bytes(TS_MSG_IMPRINT_get_msg(imprint))
        let time = asn1Bytes(TS_TST_INFO_get_time(info))
        guard let date = Self.generalizedTime(String(decoding: time, as: UTF8.self)) else {
            throw .invalidTimestamp(reason: "genTime '\(String(decoding: time, as: UTF8.self))' is malformed")
        }
        generationTime = date
        self.der = der
    }

    /// Verifies the response for `signature` against the timestamp authorities of a trusted root: the first one
    /// whose chain the token's signer reaches at `generationTime` and whose validity window holds it.
    /// - Returns: `generationTime` and the authority that vouched for it.
    /// - Throws: `VerificationError.invalidTimestamp` with each authority's reason.
    public func verify(signature: Data, authorities: [TrustedRoot.CertificateAuthority]) throws(VerificationError)
        -> (time: Date, authority: TrustedRoot.CertificateAuthority)
    {
        guard imprint == Self.hash(signature, imprintHash) else {
            throw .invalidTimestamp(reason: "timestamp is over another signature")
        }
        guard !authorities.isEmpty else {
            throw .invalidTimestamp(reason: "the trusted root lists no timestamp authority")
        }
        var reasons: [String] = []
        for authority in authorities {
            do {
                try verify(authority: authority)
                return (generationTime, authority)
            } catch {
                var reason = error.description
                if case .invalidTimestamp(let inner) = error { reason = inner }
                reasons.append(authority.uri.isEmpty ? reason : "\(authority.uri): \(reason)")
            }
        }
        throw .invalidTimestamp(reason: reasons.joined(separator: "; "))
    }

    /// One authority: the token's CMS signature and ESS signing-certificate attribute (OpenSSL), a chain from the
    /// signer to the authority's root at `generationTime` with the timestamp-signing purpose, the signer being
    /// the authority's own certificate when the root names one, an end-entity certificate whose only extended
    /// key usage is a critical `timeStamping` (RFC 3161 §2.3), and `generationTime` within the authority's window.
    private func verify(authority: TrustedRoot.CertificateAuthority) throws(VerificationError) {
        let chain = authority.chain
        let named = chain.first.flatMap { $0.isCA ? nil : $0 }
        guard let root = chain.last, root.isCA else { throw .invalidTimestamp(reason: "chain has no root") }
        if let expired = chain.first(where: { generationTime < $0.notBefore || generationTime > $0.notAfter }) {
            throw .invalidTimestamp(
                reason:
                    "the authority's certificate \(expired.subject) was not valid at \(generationTime.formatted(.iso8601))"
            )
        }
        let response = try TimestampResponseHandle(der: der)
        let untrusted = try X509StackHandle(
            chain.dropLast().map { (cert) throws(VerificationError) in try X509Handle(der: cert.der) })
        let store = try check(X509_STORE_new(), "certificate store")
        defer { X509_STORE_free(store) }
        let anchor = try X509Handle(der: root.der)
        try withExtendedLifetime(anchor) { () throws(VerificationError) in
            _ = try check(X509_STORE_add_cert(store, anchor.pointer), "timestamp authority root")
        }
        X509_VERIFY_PARAM_set_time(
            X509_STORE_get0_param(store), time_t(generationTime.timeIntervalSince1970.rounded(.down)))
        var signerPointer: OpaquePointer?
        let status = TS_RESP_verify_signature(
            TS_RESP_get_token(response.pointer), untrusted.pointer, store, &signerPointer)
        let signer = signerPointer.map { X509Handle(owning: $0) }
        guard status == 1, let signer else {
            let reason = openSSLErrorText()
            if reason.contains("certificate has expired") || reason.contains("not yet valid") {
                throw .invalidTimestamp(
                    reason: "the authority's certificate was not valid at \(generationTime.formatted(.iso8601))")
            }
            throw .invalidTimestamp(reason: "not signed by this authority: \(reason)")
        }
        let certificate = try Certificate(der: signer.der())
        if let named, certificate.der != named.der {
            throw .invalidTimestamp(reason: "signed by \(certificate.subject), not the authority's certificate")
        }
        guard !certificate.isCA, certificate.extendedKeyUsages == [Certificate.timeStampingOID],
            certificate.hasCriticalExtendedKeyUsage
        else {
            throw .invalidTimestamp(
                reason: "signer \(certificate.subject) is not an end-entity certificate for timestamping only")
        }
        guard authority.validity.contains(generationTime) else {
            throw .invalidTimestamp(
                reason:
                    "time \(generationTime.formatted(.iso8601)) is outside the authority's validity \(authority.validity)"
            )
        }
    }

    static func hash(_ data: Data, _ algorithm: PublicKey.HashAlgorithm) -> Data {
        switch algorithm {
        case .sha256: return Data(hex: SHA256Hasher.digest(data).hex)!
        case .sha384: return digest(data, EVP_sha384())
        case .sha512: return digest(data, EVP_sha512())
        }
    }

    private static func digest(_ data: Data, _ type: OpaquePointer?) -> Data {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        _ = data.withUnsafeBytes { EVP_Digest($0.baseAddress, $0.count, &out, &length, type, nil) }
        return Data(out.prefix(Int(length)))
    }

    /// `YYYYMMDDHHMMSS[.f+]Z` (RFC 3161 §2.4.2: UTC, no trailing zeros in the fraction).
    static func generalizedTime(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 15, bytes.last == UInt8(ascii: "Z"),
            bytes[..<14].allSatisfy({ (48...57).contains($0) })
        else { return nil }
        func number(_ range: Range<Int>) -> Int { bytes[range].reduce(0) { $0 * 10 + Int($1 - 48) } }
        var fraction = 0.0
        let rest = bytes[14..<(bytes.count - 1)]
        if !rest.isEmpty {
            guard rest.first == UInt8(ascii: "."), rest.count >= 2,
                rest.dropFirst().allSatisfy({ (48...57).contains($0) })
            else { return nil }
            fraction = Double("0" + String(decoding: rest, as: UTF8.self)) ?? 0
        }
        var parts = DateComponents()
        parts.timeZone = TimeZone(identifier: "UTC")
        (parts.year, parts.month, parts.day) = (number(0..<4), number(4..<6), number(6..<8))
        (parts.hour, parts.minute, parts.second) = (number(8..<10), number(10..<12), number(12..<14))
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard parts.isValidDate(in: calendar), let date = calendar.date(from: parts) else { return nil }
        return date.addingTimeInterval(fraction)
    }
}
