#pragma once
#include <sodium.h>

// libsodium for the two primitives of cosign's encrypted key files (go-securesystemslib `encrypted`): scrypt as
// the KDF and NaCl secretbox (XSalsa20-Poly1305) as the cipher. Only Verification imports this module.
