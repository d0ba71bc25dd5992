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

_Static_assert(sizeof(crypto_hash_sha256_state) <= sizeof(((eg_sha256 *)0)->opaque),
               "eg_sha256 holds libsodium's state");

void eg_sha256_init(eg_sha256 *h) { crypto_hash_sha256_init((crypto_hash_sha256_state *)h->opaque); }

void eg_sha256_update(eg_sha256 *h, const void *p, size_t n) {
  crypto_hash_sha256_update((crypto_hash_sha256_state *)h->opaque, p, n);
}

void eg_sha256_final(eg_sha256 *h, uint8_t out[32]) {
  crypto_hash_sha256_final((crypto_hash_sha256_state *)h->opaque, out);
}

void eg_memzero(void *p, size_t n) { sodium_memzero(p, n); }
