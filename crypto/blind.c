/* Blind-index tokens: keyed BLAKE2b-64 of tenant | word (crypto.h). */
#include <sodium.h>
#include <string.h>

#include "crypto/crypto_int.h"

_Static_assert(sizeof(crypto_generichash_state) <= sizeof(((eg_blind_ctx *)0)->opaque),
               "eg_blind_ctx holds a generichash state");
_Static_assert(EG_KEY_LEN >= crypto_generichash_KEYBYTES_MIN &&
                   EG_KEY_LEN <= crypto_generichash_KEYBYTES_MAX,
               "blind subkey fits generichash");

eg_err eg_blind_begin(const eg_keyring *kr, const char *tenant, eg_blind_ctx *ctx) {
  return eg_blind_begin_id(kr, kr ? eg_keyring_blind_key_id(kr) : 0, tenant, ctx);
}

eg_err eg_blind_begin_id(const eg_keyring *kr, uint32_t key_id, const char *tenant,
                         eg_blind_ctx *ctx) {
  const uint8_t *key = kr ? eg__keyring_blind_key(kr, key_id) : NULL;
  size_t tlen = tenant ? strlen(tenant) : 0;
  if (!key || !tenant || tlen > 255) return EG_EINVAL;
  crypto_generichash_state st;
  uint8_t len = (uint8_t)tlen;
  /* 16 bytes out (the generichash minimum); the token is the first 8. */
  if (crypto_generichash_init(&st, key, EG_KEY_LEN, crypto_generichash_BYTES_MIN) != 0)
    return EG_EINVAL;
  crypto_generichash_update(&st, &len, 1);
  crypto_generichash_update(&st, (const unsigned char *)tenant, tlen);
  memcpy(ctx->opaque, &st, sizeof st);
  sodium_memzero(&st, sizeof st);
  return EG_OK;
}

uint64_t eg_blind_word(const eg_blind_ctx *ctx, const void *word, size_t len) {
  crypto_generichash_state st;
  uint8_t out[crypto_generichash_BYTES_MIN];
  uint64_t v = 0;
  memcpy(&st, ctx->opaque, sizeof st);
  crypto_generichash_update(&st, word, len);
  crypto_generichash_final(&st, out, sizeof out);
  for (int i = 0; i < 8; i++) v = v << 8 | out[i];
  sodium_memzero(&st, sizeof st);
  return v;
}

void eg_blind_end(eg_blind_ctx *ctx) { sodium_memzero(ctx->opaque, sizeof ctx->opaque); }
