/*
 * Field tokens: seal and open (format in crypto.h; docs/architecture.md
 * section 4 places it among the on-disk formats).
 */
#include <assert.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto_int.h"

#define EG_TOKEN_KEY_ID_AT 1
#define EG_TOKEN_ISSUED_AT 5
#define EG_TOKEN_NONCE_AT 13

_Static_assert(EG_TOKEN_NONCE_AT + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES ==
                   EG_TOKEN_HEADER_LEN, "header = version, key id, issued_at, nonce");
_Static_assert(EG_TOKEN_TAG_LEN == crypto_aead_xchacha20poly1305_ietf_ABYTES, "tag length");
_Static_assert(EG_KEY_LEN == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key length");

static void store_be(uint8_t *p, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static uint32_t load_u32_be(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Appends u32 BE length || bytes of s at p; returns the end. The length
 * prefix keeps ("ab", "c") and ("a", "bc") from encoding alike. */
static uint8_t *put_part(uint8_t *p, const char *s, size_t len) {
  store_be(p, len, 4);
  memcpy(p + 4, s, len);
  return p + 4 + len;
}

/* Builds the associated data: the token header followed by the encoded
 * context. Returns a malloc'd buffer (the caller frees it) or NULL. */
static uint8_t *ad_new(const uint8_t *header, const eg_field_ctx *ctx, size_t *adlen) {
  const char *parts[4] = {ctx->tenant, ctx->kind, ctx->record_id, ctx->field};
  size_t lens[4];
  size_t total = EG_TOKEN_HEADER_LEN;
  assert(parts[0] && parts[1] && parts[2] && parts[3]);
  for (int i = 0; i < 4; i++) {
    lens[i] = strlen(parts[i]);
    total += 4 + lens[i];
  }
  uint8_t *ad = malloc(total);
  if (!ad) return NULL;
  memcpy(ad, header, EG_TOKEN_HEADER_LEN);
  uint8_t *p = ad + EG_TOKEN_HEADER_LEN;
  for (int i = 0; i < 4; i++) p = put_part(p, parts[i], lens[i]);
  *adlen = total;
  return ad;
}

/* Which subkey of a master key a token is sealed under. */
typedef const uint8_t *(*eg_subkey_fn)(const eg_keyring *kr, uint32_t id);

/* The AEAD path every format shares: writes the header (version, id: a
 * master key id or a data key generation, issued_at, a fresh nonce) and
 * seals pt under key with that header and ctx as associated data. */
static eg_err seal_with(uint8_t version, uint32_t id, const uint8_t *key, const eg_field_ctx *ctx,
                        const uint8_t *pt, size_t plen, uint8_t *out) {
  size_t adlen;
  out[0] = version;
  store_be(out + EG_TOKEN_KEY_ID_AT, id, 4);
  store_be(out + EG_TOKEN_ISSUED_AT, (uint64_t)time(NULL), 8);
  /* 192-bit random nonces: no counter to keep, no collision to fear. */
  randombytes_buf(out + EG_TOKEN_NONCE_AT, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  uint8_t *ad = ad_new(out, ctx, &adlen);
  if (!ad) return EG_ENOMEM;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out + EG_TOKEN_HEADER_LEN, NULL, pt, plen, ad,
                                             adlen, NULL, out + EG_TOKEN_NONCE_AT, key);
  free(ad);
  return EG_OK;
}

/* Opens tok under key (NULL: no key for it, fails), the counterpart of
 * seal_with; the caller checked toklen >= EG_TOKEN_OVERHEAD. */
static eg_err open_with(const uint8_t *key, const eg_field_ctx *ctx, const uint8_t *tok,
                        size_t toklen, uint8_t *out, size_t *plen) {
  uint8_t *ad = NULL;
  size_t adlen;
  unsigned long long mlen;
  eg_err rc = EG_ECORRUPT;
  if (!key) goto fail;
  ad = ad_new(tok, ctx, &adlen);
  if (!ad) {
    rc = EG_ENOMEM;
    goto fail;
  }
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &mlen, NULL, tok + EG_TOKEN_HEADER_LEN,
                                                 toklen - EG_TOKEN_HEADER_LEN, ad, adlen,
                                                 tok + EG_TOKEN_NONCE_AT, key) != 0)
    goto fail;
  free(ad);
  *plen = (size_t)mlen;
  return EG_OK;
fail:
  free(ad);
  /* Never hand back a partly opened plaintext. */
  sodium_memzero(out, toklen - EG_TOKEN_OVERHEAD);
  return rc;
}

static eg_err token_seal(eg_subkey_fn subkey, const eg_keyring *kr, const eg_field_ctx *ctx,
                         const uint8_t *pt, size_t plen, uint8_t *out) {
  uint32_t key_id = eg_keyring_primary_id(kr);
  const uint8_t *key = subkey(kr, key_id);
  assert(key); /* eg_keyring_load checked the primary is among the keys */
  return seal_with(EG_TOKEN_VERSION, key_id, key, ctx, pt, plen, out);
}

eg_err eg_token_key_id(const uint8_t *tok, size_t toklen, uint32_t *key_id) {
  if (toklen < EG_TOKEN_HEADER_LEN || tok[0] != EG_TOKEN_VERSION) return EG_ECORRUPT;
  *key_id = load_u32_be(tok + EG_TOKEN_KEY_ID_AT);
  return EG_OK;
}

eg_err eg_token_version(const uint8_t *tok, size_t toklen, uint8_t *version) {
  if (toklen < EG_TOKEN_HEADER_LEN ||
      (tok[0] != EG_TOKEN_VERSION && tok[0] != EG_TOKEN_VERSION_DEK))
    return EG_ECORRUPT;
  *version = tok[0];
  return EG_OK;
}

static eg_err token_open(eg_subkey_fn subkey, const eg_keyring *kr, const eg_field_ctx *ctx,
                         const uint8_t *tok, size_t toklen, uint8_t *out, size_t *plen) {
  /* Too short to hold a header and a tag: out has no bytes to zero. */
  if (toklen < EG_TOKEN_OVERHEAD) return EG_ECORRUPT;
  /* The key id names the key, so rotation needs no trial decryption. */
  uint32_t key_id;
  const uint8_t *key =
      eg_token_key_id(tok, toklen, &key_id) == EG_OK ? subkey(kr, key_id) : NULL;
  return open_with(key, ctx, tok, toklen, out, plen);
}

eg_err eg_token_seal_dek(const uint8_t key[EG_KEY_LEN], uint32_t gen, const eg_field_ctx *ctx,
                         const uint8_t *pt, size_t plen, uint8_t *out) {
  return seal_with(EG_TOKEN_VERSION_DEK, gen, key, ctx, pt, plen, out);
}

eg_err eg_token_open_dek(const uint8_t key[EG_KEY_LEN], const eg_field_ctx *ctx,
                         const uint8_t *tok, size_t toklen, uint8_t *out, size_t *plen) {
  if (toklen < EG_TOKEN_OVERHEAD) return EG_ECORRUPT;
  /* A format 1 token under a data key would be a master key's subkey
   * mistaken for a data key: refused before any decryption. */
  return open_with(tok[0] == EG_TOKEN_VERSION_DEK ? key : NULL, ctx, tok, toklen, out, plen);
}

eg_err eg_token_generation(const uint8_t *tok, size_t toklen, uint32_t *gen) {
  if (toklen < EG_TOKEN_HEADER_LEN || tok[0] != EG_TOKEN_VERSION_DEK) return EG_ECORRUPT;
  *gen = load_u32_be(tok + EG_TOKEN_KEY_ID_AT);
  return EG_OK;
}

eg_err eg_token_seal(const eg_keyring *kr, const eg_field_ctx *ctx, const uint8_t *pt,
                     size_t plen, uint8_t *out) {
  return token_seal(eg__keyring_field_key, kr, ctx, pt, plen, out);
}

eg_err eg_token_open(const eg_keyring *kr, const eg_field_ctx *ctx, const uint8_t *tok,
                     size_t toklen, uint8_t *out, size_t *plen) {
  return token_open(eg__keyring_field_key, kr, ctx, tok, toklen, out, plen);
}

eg_err eg_page_seal(const eg_keyring *kr, const eg_field_ctx *ctx, const uint8_t *pt, size_t plen,
                    uint8_t *out) {
  return token_seal(eg__keyring_page_key, kr, ctx, pt, plen, out);
}

eg_err eg_page_open(const eg_keyring *kr, const eg_field_ctx *ctx, const uint8_t *tok,
                    size_t toklen, uint8_t *out, size_t *plen) {
  return token_open(eg__keyring_page_key, kr, ctx, tok, toklen, out, plen);
}

/* The associated data's encoding, shared with key wrapping (wrap.c). */
void eg__store_be(uint8_t *p, uint64_t v, int bytes) { store_be(p, v, bytes); }
uint8_t *eg__put_part(uint8_t *p, const char *s, size_t len) { return put_part(p, s, len); }
