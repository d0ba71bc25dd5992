/*
 * Private to crypto/: what token.c needs from keyring.c.
 */
#ifndef EG_CRYPTO_INT_H
#define EG_CRYPTO_INT_H

#include <stdint.h>

#include "crypto/crypto.h"

/* The field-encryption subkey derived from master key `id`, or NULL if the
 * keyring has no such key. Valid until eg_keyring_free(kr). */
const uint8_t *eg__keyring_field_key(const eg_keyring *kr, uint32_t id);
/* The page-token subkey derived from master key `id`, or NULL. Valid
 * until eg_keyring_free(kr). */
const uint8_t *eg__keyring_page_key(const eg_keyring *kr, uint32_t id);
/* The blind-index subkey of the key with this id, or NULL when kr holds
 * none. Valid until eg_keyring_free(kr). */
const uint8_t *eg__keyring_blind_key(const eg_keyring *kr, uint32_t id);

#endif
