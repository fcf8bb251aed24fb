import COpenSSL
import Foundation

extension Certificate {
    /// Builds and verifies a path from this certificate to one of `roots` with OpenSSL's `X509_verify_cert`,
    /// judging validity periods at `time` (for keyless signatures: the moment Rekor logged the signature).
    ///
    /// Only `roots` are trust anchors; `intermediates` may come from the signature itself and are only candidates.
    /// - Returns: the verified chain, leaf first, root last.
    /// - Throws: `certificateExpired(at:)` when a certificate was not valid at `time`; `untrustedCertificate`
    ///   for every other path failure, with OpenSSL's reason.
    public func verifyChain(roots: [Certificate], intermediates: [Certificate], at time: Date)
        throws(VerificationError) -> [Certificate]
    {
        guard !roots.isEmpty else { throw .untrustedCertificate(reason: "no trusted root certificates") }
        let leaf = try X509Handle(der: der)
        let anchors = try roots.map { (root) throws(VerificationError) in try X509Handle(der: root.der) }
        let candidates = try X509StackHandle(
            intermediates.map { (cert) throws(VerificationError) in try X509Handle(der: cert.der) })

        let store = try check(X509_STORE_new(), "certificate store")
        defer { X509_STORE_free(store) }
        for anchor in anchors {
            try check(X509_STORE_add_cert(store, anchor.pointer), "trusted root certificate")
        }
        let context = try check(X509_STORE_CTX_new(), "certificate verification context")
        defer { X509_STORE_CTX_free(context) }
        try check(X509_STORE_CTX_init(context, store, leaf.pointer, candidates.pointer), "certificate verification")
        X509_VERIFY_PARAM_set_time(
            X509_STORE_CTX_get0_param(context), time_t(time.timeIntervalSince1970.rounded(.down)))

        guard X509_verify_cert(context) == 1 else {
            let code = X509_STORE_CTX_get_error(context)
            clearOpenSSLErrors()
            switch code {
            case X509_V_ERR_CERT_HAS_EXPIRED, X509_V_ERR_CERT_NOT_YET_VALID:
                throw .certificateExpired(at: time)
            default:
                let reason = String(cString: X509_verify_cert_error_string(Int(code)))
                throw .untrustedCertificate(reason: "\(reason) (depth \(X509_STORE_CTX_get_error_depth(context)))")
            }
        }
        guard let chain = X509_STORE_CTX_get0_chain(context) else {
            throw .untrustedCertificate(reason: "OpenSSL returned no chain")
        }
        var verified: [Certificate] = []
        for index in 0..<mcvfs_sk_X509_num(chain) {
            let member = X509Handle(retaining: mcvfs_sk_X509_value(chain, index))
            verified.append(try Certificate(der: member.der()))
        }
        return verified
    }
}
