import COpenSSL
import ContentHash
import Foundation

extension Certificate {
    /// A signed certificate timestamp embedded in a certificate: a CT log's promise to publish its precertificate.
    public struct SignedCertificateTimestamp: Sendable, Equatable {
        /// SHA-256 of the log key's DER SubjectPublicKeyInfo.
        public let logID: Data
        /// Milliseconds since the epoch.
        public let timestamp: UInt64
        public let extensions: Data
        /// The signature bytes (ASN.1 DER ECDSA or RSA PKCS#1 v1.5 over SHA-256).
        public let signature: Data
    }

    /// The SCTs in the certificate's SCT-list extension (1.3.6.1.4.1.11129.2.4.2); empty when it has none.
    public func embeddedSCTs() throws(VerificationError) -> [SignedCertificateTimestamp] {
        let handle = try X509Handle(der: der)
        guard let list = mcvfs_embedded_scts(handle.pointer) else {
            clearOpenSSLErrors()
            return []
        }
        defer { mcvfs_SCT_LIST_free(list) }
        var result: [SignedCertificateTimestamp] = []
        for index in 0..<mcvfs_sk_SCT_num(list) {
            let sct = mcvfs_sk_SCT_value(list, index)
            guard SCT_get_version(sct) == SCT_VERSION_V1 else {
                throw .invalidSCT(reason: "unsupported SCT version")
            }
            var pointer: UnsafeMutablePointer<UInt8>? = nil
            let idLength = SCT_get0_log_id(sct, &pointer)
            let logID = pointer.map { Data(bytes: $0, count: idLength) } ?? Data()
            pointer = nil
            let extLength = SCT_get0_extensions(sct, &pointer)
            let extensions = pointer.map { Data(bytes: $0, count: extLength) } ?? Data()
            pointer = nil
            let sigLength = SCT_get0_signature(sct, &pointer)
            let signature = pointer.map { Data(bytes: $0, count: sigLength) } ?? Data()
            result.append(
                SignedCertificateTimestamp(
                    logID: logID, timestamp: SCT_get_timestamp(sct), extensions: extensions, signature: signature))
        }
        return result
    }

    /// The precertificate TBSCertificate a CT log signed: this certificate's TBS without the SCT-list extension.
    func precertificateTBS() throws(VerificationError) -> Data {
        let handle = try X509Handle(der: der)
        var out: UnsafeMutablePointer<UInt8>? = nil
        let length = mcvfs_precert_tbs(handle.pointer, &out)
        guard length > 0, let out else { throw .malformed(what: "certificate", reason: openSSLErrorText()) }
        defer { mcvfs_OPENSSL_free(out) }
        return Data(bytes: out, count: Int(length))
    }

    /// Verifies the embedded SCTs against `logs` and returns how many are valid: from a known log, signed by its
    /// key over this certificate's precertificate entry (RFC 6962 §3.2), while the log key was valid.
    /// - Parameter issuer: the certificate that issued this one (its key hash is part of the signed entry).
    public func validEmbeddedSCTCount(issuer: Certificate, logs: [TrustedRoot.Log]) throws(VerificationError) -> Int {
        let scts = try embeddedSCTs()
        guard !scts.isEmpty else { return 0 }
        let tbs = try precertificateTBS()
        let issuerKeyHash = Data(hex: SHA256Hasher.digest(issuer.publicKey.spki).hex)!
        var valid = 0
        for sct in scts {
            guard let log = logs.first(where: { $0.logID == sct.logID }),
                log.validity.contains(Date(timeIntervalSince1970: TimeInterval(sct.timestamp) / 1000))
            else { continue }
            // digitally-signed struct { version, signature_type = certificate_timestamp, timestamp,
            // entry_type = precert_entry, issuer_key_hash, TBSCertificate<1..2^24-1>, CtExtensions<0..2^16-1> }
            var signed = Data([0, 0])
            signed.append(bigEndian: sct.timestamp, bytes: 8)
            signed.append(bigEndian: 1, bytes: 2)
            signed.append(issuerKeyHash)
            signed.append(bigEndian: UInt64(tbs.count), bytes: 3)
            signed.append(tbs)
            signed.append(bigEndian: UInt64(sct.extensions.count), bytes: 2)
            signed.append(sct.extensions)
            if try log.publicKey.isValidSignature(sct.signature, over: signed) { valid += 1 }
        }
        return valid
    }
}

extension Data {
    /// Appends the low `bytes` bytes of `value`, most significant first (TLS encoding).
    mutating func append(bigEndian value: UInt64, bytes: Int) {
        for shift in stride(from: (bytes - 1) * 8, through: 0, by: -8) {
            append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }
}
