/* Thin wrappers over libsodium, so callers need not include <sodium.h>. */
#include <sodium.h>

#include "crypto/crypto.h"

void eg_sha256_hex(const char *s, size_t len, char hex[65]) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, (const unsigned char *)s, len);
  sodium_bin2hex(hex, 65, digest, sizeof digest);
}

int eg_crypto_equal(const void *a, const void *b, size_t len) {
  return sodium_memcmp(a, b, len) == 0;
}

void eg_random_bytes(void *buf, size_t n) { randombytes_buf(buf, n); }
