#pragma once
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/x509_vfy.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/rsa.h>
#include <openssl/objects.h>
#include <openssl/ct.h>
#include <openssl/ts.h>

// OpenSSL's STACK_OF(...) accessors are macros or type-checked inline functions that Swift cannot import;
// these wrappers give Verification the few it needs.

static inline STACK_OF(X509) *mcvfs_sk_X509_new_null(void) { return sk_X509_new_null(); }
static inline int mcvfs_sk_X509_push(STACK_OF(X509) *stack, X509 *cert) { return sk_X509_push(stack, cert); }
/// Frees the stack and drops the reference each member holds.
static inline void mcvfs_sk_X509_pop_free(STACK_OF(X509) *stack) { sk_X509_pop_free(stack, X509_free); }

static inline int mcvfs_sk_GENERAL_NAME_num(const GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }
static inline GENERAL_NAME *mcvfs_sk_GENERAL_NAME_value(const GENERAL_NAMES *names, int i) {
    return sk_GENERAL_NAME_value(names, i);
}
static inline void mcvfs_GENERAL_NAMES_free(GENERAL_NAMES *names) { GENERAL_NAMES_free(names); }

static inline int mcvfs_sk_ASN1_OBJECT_num(const EXTENDED_KEY_USAGE *eku) { return sk_ASN1_OBJECT_num(eku); }
static inline ASN1_OBJECT *mcvfs_sk_ASN1_OBJECT_value(const EXTENDED_KEY_USAGE *eku, int i) {
    return sk_ASN1_OBJECT_value(eku, i);
}
static inline void mcvfs_EXTENDED_KEY_USAGE_free(EXTENDED_KEY_USAGE *eku) { EXTENDED_KEY_USAGE_free(eku); }

/// The `GENERAL_NAME` payload for the string-valued kinds (email, DNS, URI); NULL for the others.
static inline const ASN1_STRING *mcvfs_GENERAL_NAME_string(const GENERAL_NAME *name, int *type) {
    *type = name->type;
    switch (name->type) {
    case GEN_EMAIL: return name->d.rfc822Name;
    case GEN_DNS: return name->d.dNSName;
    case GEN_URI: return name->d.uniformResourceIdentifier;
    default: return NULL;
    }
}

static inline void mcvfs_OPENSSL_free(void *p) { OPENSSL_free(p); }

static inline long mcvfs_BIO_get_mem_data(BIO *bio, char **data) { return BIO_get_mem_data(bio, data); }

static inline int mcvfs_sk_X509_num(const STACK_OF(X509) *stack) { return sk_X509_num(stack); }
static inline X509 *mcvfs_sk_X509_value(const STACK_OF(X509) *stack, int i) { return sk_X509_value(stack, i); }

static inline unsigned long mcvfs_XN_FLAG_RFC2253(void) { return XN_FLAG_RFC2253; }

/// `EVP_EC_gen` is a macro over the variadic `EVP_PKEY_Q_keygen`, which Swift cannot call.
static inline EVP_PKEY *mcvfs_EVP_EC_gen(const char *curve) { return EVP_EC_gen(curve); }

// Embedded signed certificate timestamps (RFC 6962 §3.3). OpenSSL's own SCT_validate needs a CTLOG_STORE, which
// can only be filled from a file; Verification checks the signatures itself and needs only these accessors.

/// The certificate's embedded SCT list (NULL when it has none); free with `mcvfs_SCT_LIST_free`.
static inline STACK_OF(SCT) *mcvfs_embedded_scts(X509 *leaf) {
    return X509_get_ext_d2i(leaf, NID_ct_precert_scts, NULL, NULL);
}
static inline int mcvfs_sk_SCT_num(const STACK_OF(SCT) *scts) { return sk_SCT_num(scts); }
static inline SCT *mcvfs_sk_SCT_value(const STACK_OF(SCT) *scts, int i) { return sk_SCT_value(scts, i); }
static inline void mcvfs_SCT_LIST_free(STACK_OF(SCT) *scts) { SCT_LIST_free(scts); }

/// The DER TBSCertificate of `leaf` without its SCT-list extension: for a certificate issued from a precertificate,
/// exactly the TBS the CT log signed (the poison extension having taken the SCT list's place). Returns the length,
/// or -1; `*out` is allocated by OpenSSL (free with `mcvfs_OPENSSL_free`).
static inline int mcvfs_precert_tbs(X509 *leaf, unsigned char **out) {
    X509 *copy = X509_dup(leaf);
    if (copy == NULL) return -1;
    int index = X509_get_ext_by_NID(copy, NID_ct_precert_scts, -1);
    if (index >= 0) X509_EXTENSION_free(X509_delete_ext(copy, index));
    int length = i2d_re_X509_tbs(copy, out);
    X509_free(copy);
    return length;
}

