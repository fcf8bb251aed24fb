import COpenSSL
import Foundation

// The only file where OpenSSL handles live: each wrapper owns one handle and frees it in `deinit`.
// Nothing here is public; the public types hold DER bytes and re-parse them per operation.

/// An owned `EVP_PKEY` parsed from a DER SubjectPublicKeyInfo.
final class PKeyHandle {
    let pointer: OpaquePointer

    init(spki: Data) throws(VerificationError) {
        let parsed = decodeDER(spki, { d2i_PUBKEY(nil, &$0, $1) }, free: EVP_PKEY_free)
        pointer = try check(parsed, "public key (DER SubjectPublicKeyInfo)")
    }

    init(certificate: X509Handle) throws(VerificationError) {
        pointer = try check(X509_get_pubkey(certificate.pointer), "certificate public key")
    }

    deinit { EVP_PKEY_free(pointer) }

    /// The key re-encoded as DER SubjectPublicKeyInfo.
    func spki() throws(VerificationError) -> Data {
        var out: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_PUBKEY(pointer, &out)
        guard length > 0, let out else { throw .malformed(what: "public key", reason: openSSLErrorText()) }
        defer { mcvfs_OPENSSL_free(out) }
        return Data(bytes: out, count: Int(length))
    }

    /// 1: valid; 0: does not verify; throws when OpenSSL cannot even try (unsupported digest for the key).
    func verify(signature: Data, message: Data, digest: OpaquePointer?) throws(VerificationError) -> Bool {
        let context = try check(EVP_MD_CTX_new(), "verification context")
        defer { EVP_MD_CTX_free(context) }
        try check(EVP_DigestVerifyInit(context, nil, digest, nil, pointer), "verification set-up")
        let status = withBytes(signature, message) { EVP_DigestVerify(context, $0, $1, $2, $3) }
        // A bad signature leaves a reason on the queue (for ECDSA, often a DER decode error); it is not a fault.
        clearOpenSSLErrors()
        return status == 1
    }

    /// Like `verify(signature:message:digest:)` for a message already hashed with `digest` (ECDSA and RSA only).
    func verify(signature: Data, prehashed hash: Data, digest: OpaquePointer?) throws(VerificationError) -> Bool {
        let context = try check(EVP_PKEY_CTX_new(pointer, nil), "verification context")
        defer { EVP_PKEY_CTX_free(context) }
        try check(EVP_PKEY_verify_init(context), "verification set-up")
        try check(EVP_PKEY_CTX_set_signature_md(context, digest), "verification digest")
        let status = withBytes(signature, hash) { EVP_PKEY_verify(context, $0, $1, $2, $3) }
        clearOpenSSLErrors()
        return status == 1
    }
}

/// An owned `EVP_PKEY` holding a private key.
final class PrivateKeyHandle {
    let pointer: OpaquePointer

    init(owning pointer: OpaquePointer) { self.pointer = pointer }

    init(pkcs8: Data) throws(VerificationError) {
        let parsed: OpaquePointer? = pkcs8.withUnsafeBytes { raw in
            guard let base = raw.bindMemory(to: UInt8.self).baseAddress else { return nil }
            var cursor: UnsafePointer<UInt8>? = base
            guard let info = d2i_PKCS8_PRIV_KEY_INFO(nil, &cursor, raw.count) else { return nil }
            defer { PKCS8_PRIV_KEY_INFO_free(info) }
            guard cursor == base + raw.count else { return nil }
            return EVP_PKCS82PKEY(info)
        }
        pointer = try check(parsed, "private key (DER PKCS#8)")
    }

    deinit { EVP_PKEY_free(pointer) }

    func pkcs8() throws(VerificationError) -> Data {
        let info = try check(EVP_PKEY2PKCS8(pointer), "private key encoding")
        defer { PKCS8_PRIV_KEY_INFO_free(info) }
        var out: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_PKCS8_PRIV_KEY_INFO(info, &out)
        guard length > 0, let out else { throw .malformed(what: "private key", reason: openSSLErrorText()) }
        defer { mcvfs_OPENSSL_free(out) }
        return Data(bytes: out, count: Int(length))
    }

    func publicKey() throws(VerificationError) -> PublicKey {
        var out: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_PUBKEY(pointer, &out)
        guard length > 0, let out else { throw .malformed(what: "private key", reason: openSSLErrorText()) }
        defer { mcvfs_OPENSSL_free(out) }
        return try PublicKey(spki: Data(bytes: out, count: Int(length)))
    }

    func sign(_ message: Data, digest: OpaquePointer?) throws(VerificationError) -> Data {
        let context = try check(EVP_MD_CTX_new(), "signing context")
        defer { EVP_MD_CTX_free(context) }
        try check(EVP_DigestSignInit(context, nil, digest, nil, pointer), "signing set-up")
        var length = 0
        try check(EVP_DigestSign(context, nil, &length, nil, 0), "signature size")
        var signature = [UInt8](repeating: 0, count: length)
        let status = message.withUnsafeBytes { msg in
            EVP_DigestSign(context, &signature, &length, msg.bindMemory(to: UInt8.self).baseAddress, msg.count)
        }
        try check(status, "signing")
        return Data(signature.prefix(length))
    }
}

/// An owned `X509` parsed from DER.
final class X509Handle {
    let pointer: OpaquePointer

    init(der: Data) throws(VerificationError) {
        let parsed = decodeDER(der, { d2i_X509(nil, &$0, $1) }, free: X509_free)
        pointer = try check(parsed, "certificate (DER)")
    }

    /// Takes a reference of its own on a certificate OpenSSL handed out.
    init(retaining pointer: OpaquePointer) {
        X509_up_ref(pointer)
        self.pointer = pointer
    }

    /// Takes over a reference OpenSSL handed to the caller.
    init(owning pointer: OpaquePointer) { self.pointer = pointer }

    deinit { X509_free(pointer) }

    func der() throws(VerificationError) -> Data {
        var out: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_X509(pointer, &out)
        guard length > 0, let out else { throw .malformed(what: "certificate", reason: openSSLErrorText()) }
        defer { mcvfs_OPENSSL_free(out) }
        return Data(bytes: out, count: Int(length))
    }
}

/// An owned `STACK_OF(X509)` whose members each hold a reference.
final class X509StackHandle {
    let pointer: OpaquePointer

    init(_ certificates: [X509Handle]) throws(VerificationError) {
        pointer = try check(mcvfs_sk_X509_new_null(), "certificate stack")
        for certificate in certificates {
            X509_up_ref(certificate.pointer)
            guard mcvfs_sk_X509_push(pointer, certificate.pointer) > 0 else {
                X509_free(certificate.pointer)
                throw .malformed(what: "certificate stack", reason: openSSLErrorText())
            }
        }
    }

    deinit { mcvfs_sk_X509_pop_free(pointer) }
}

/// An owned `TS_RESP` (RFC 3161 `TimeStampResp`) parsed from DER.
final class TimestampResponseHandle {
    let pointer: OpaquePointer

    init(der: Data) throws(VerificationError) {
        let parsed = decodeDER(der, { d2i_TS_RESP(nil, &$0, $1) }, free: TS_RESP_free)
        guard let parsed else {
            clearOpenSSLErrors()
            throw .invalidTimestamp(reason: "not a DER TimeStampResp")
        }
        pointer = parsed
    }

    deinit { TS_RESP_free(pointer) }
}

/// Calls `body` with the bytes and lengths of `first` and `second`, OpenSSL's (pointer, length) argument pairs.
private func withBytes<R>(
    _ first: Data, _ second: Data, _ body: (UnsafePointer<UInt8>?, Int, UnsafePointer<UInt8>?, Int) -> R
) -> R {
    first.withUnsafeBytes { a in
        second.withUnsafeBytes { b in
            body(a.bindMemory(to: UInt8.self).baseAddress, a.count, b.bindMemory(to: UInt8.self).baseAddress, b.count)
        }
    }
}

/// Runs an OpenSSL `d2i_*` decoder over `data`, requiring it to consume every byte: trailing bytes after the
/// structure mean the input is not one such value. Frees what was decoded when it is refused.
private func decodeDER(
    _ data: Data, _ decode: (inout UnsafePointer<UInt8>?, Int) -> OpaquePointer?, free: (OpaquePointer) -> Void
) -> OpaquePointer? {
    data.withUnsafeBytes { raw in
        guard let base = raw.bindMemory(to: UInt8.self).baseAddress else { return nil }
        var cursor: UnsafePointer<UInt8>? = base
        guard let value = decode(&cursor, raw.count) else { return nil }
        guard cursor == base + raw.count else {
            free(value)
            return nil
        }
        return value
    }
}

/// Bytes and length of an `ASN1_STRING` (also `ASN1_OCTET_STRING`, `ASN1_IA5STRING`).
func asn1Bytes(_ string: UnsafePointer<ASN1_STRING>?) -> Data {
    guard let string, let bytes = ASN1_STRING_get0_data(string) else { return Data() }
    return Data(bytes: bytes, count: Int(ASN1_STRING_length(string)))
}

/// The dotted form of an ASN.1 object identifier (`1.3.6.1.5.5.7.3.3`).
func dottedOID(_ object: OpaquePointer?) -> String {
    var buffer = [CChar](repeating: 0, count: 128)
    let length = OBJ_obj2txt(&buffer, Int32(buffer.count), object, 1)
    guard length > 0 else { return "" }
    return String(decoding: buffer.prefix(Int(min(length, 127))).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// An `ASN1_TIME` as a `Date`.
func asn1Date(_ time: UnsafePointer<ASN1_TIME>?) throws(VerificationError) -> Date {
    var parts = tm()
    try check(ASN1_TIME_to_tm(time, &parts), "certificate validity time")
    return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
}
