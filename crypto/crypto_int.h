/*
 * Private to crypto/: what token.c needs from keyring.c.
 */
#ifndef EG_CRYPTO_INT_H
#define EG_CRYPTO_INT_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"

/* The field-encryption subkey derived from master key `id`, or NULL if the
 * keyring has no such key. Valid until eg_keyring_free(kr). */
const uint8_t *eg__keyring_field_key(const eg_keyring *kr, uint32_t id);
/* The page-token subkey derived from master key `id`, or NULL. Valid
 * until eg_keyring_free(kr). */
const uint8_t *eg__keyring_page_key(const eg_keyring *kr, uint32_t id);
/* The key-wrapping subkey derived from master key `id` (crypto/wrap.c),
 * or NULL. Valid until eg_keyring_free(kr). */
const uint8_t *eg__keyring_wrap_key(const eg_keyring *kr, uint32_t id);
/* The blind-index subkey (of the lowest key id), or NULL for an empty
 * keyring. Valid until eg_keyring_free(kr). */
const uint8_t *eg__keyring_blind_key(const eg_keyring *kr);

/* token.c, shared with wrap.c: the associated data's encoding. */
/* Writes v as `bytes` big-endian bytes at p. */
void eg__store_be(uint8_t *p, uint64_t v, int bytes);
/* Appends u32 BE length || bytes of s at p; returns the end. The length
 * prefix keeps ("ab", "c") and ("a", "bc") from encoding alike. */
uint8_t *eg__put_part(uint8_t *p, const char *s, size_t len);

#endif
