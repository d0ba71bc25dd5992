/*
 * Key wrapping: a user's data key sealed under a master key's key-wrapping
 * subkey (format in crypto.h). The associated data binds the wrapped key to
 * its (tenant, user, generation), so a wrapped key copied onto another
 * user's row, or another generation's, fails to open instead of serving
 * that user's data.
 */
#include <sodium.h>
#include <string.h>

#include "crypto/crypto_int.h"

#define EG_WRAP_VERSION 0x01
#define EG_WRAP_KEY_ID_AT 1
#define EG_WRAP_NONCE_AT 5
#define EG_WRAP_HEADER_LEN (EG_WRAP_NONCE_AT + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
/* Tenant and user ids are at most 128 bytes (server/validate.c); the AD
 * holds each with its 4-byte length, and the generation. */
#define EG_WRAP_ID_MAX 128
#define EG_WRAP_AD_MAX (EG_WRAP_HEADER_LEN + 2 * (4 + EG_WRAP_ID_MAX) + 4)

_Static_assert(EG_WRAPPED_KEY_LEN ==
                   EG_WRAP_HEADER_LEN + EG_KEY_LEN + crypto_aead_xchacha20poly1305_ietf_ABYTES,
               "wrapped key = header, sealed key, tag");

/* header || len tenant || len user || generation u32 BE into ad; its
 * length, or 0 when an id is too long. */
static size_t wrap_ad(const uint8_t *header, const char *tenant, const char *user, uint32_t gen,
                      uint8_t ad[EG_WRAP_AD_MAX]) {
  size_t tlen = strlen(tenant), ulen = strlen(user);
  if (tlen > EG_WRAP_ID_MAX || ulen > EG_WRAP_ID_MAX) return 0;
  memcpy(ad, header, EG_WRAP_HEADER_LEN);
  uint8_t *p = eg__put_part(ad + EG_WRAP_HEADER_LEN, tenant, tlen);
  p = eg__put_part(p, user, ulen);
  eg__store_be(p, gen, 4);
  return (size_t)(p + 4 - ad);
}

eg_err eg_key_wrap(const eg_keyring *kr, const char *tenant, const char *user, uint32_t gen,
                   const uint8_t key[EG_KEY_LEN], uint8_t out[EG_WRAPPED_KEY_LEN]) {
  uint8_t ad[EG_WRAP_AD_MAX];
  uint32_t id = eg_keyring_primary_id(kr);
  const uint8_t *wk = eg__keyring_wrap_key(kr, id);
  if (!wk) return EG_EINVAL;
  out[0] = EG_WRAP_VERSION;
  eg__store_be(out + EG_WRAP_KEY_ID_AT, id, 4);
  randombytes_buf(out + EG_WRAP_NONCE_AT, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  size_t adlen = wrap_ad(out, tenant, user, gen, ad);
  if (!adlen) return EG_EINVAL;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out + EG_WRAP_HEADER_LEN, NULL, key, EG_KEY_LEN, ad,
                                             adlen, NULL, out + EG_WRAP_NONCE_AT, wk);
  return EG_OK;
}

uint32_t eg_wrapped_key_master_id(const uint8_t in[EG_WRAPPED_KEY_LEN]) {
  return (uint32_t)in[1] << 24 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 8 | in[4];
}

eg_err eg_key_unwrap(const eg_keyring *kr, const char *tenant, const char *user, uint32_t gen,
                     const uint8_t in[EG_WRAPPED_KEY_LEN], uint8_t key[EG_KEY_LEN]) {
  uint8_t ad[EG_WRAP_AD_MAX];
  const uint8_t *wk =
      in[0] == EG_WRAP_VERSION ? eg__keyring_wrap_key(kr, eg_wrapped_key_master_id(in)) : NULL;
  size_t adlen = wk ? wrap_ad(in, tenant, user, gen, ad) : 0;
  if (!adlen || crypto_aead_xchacha20poly1305_ietf_decrypt(
                    key, NULL, NULL, in + EG_WRAP_HEADER_LEN,
                    EG_WRAPPED_KEY_LEN - EG_WRAP_HEADER_LEN, ad, adlen,
                    in + EG_WRAP_NONCE_AT, wk) != 0) {
    sodium_memzero(key, EG_KEY_LEN);
    return EG_ECORRUPT;
  }
  return EG_OK;
}
