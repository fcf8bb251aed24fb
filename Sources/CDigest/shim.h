#pragma once
// Only the message-digest interface of libcrypto: content hashing needs nothing of the certificate and key code
// that `COpenSSL` (imported by Verification alone) exposes.
#include <openssl/evp.h>
