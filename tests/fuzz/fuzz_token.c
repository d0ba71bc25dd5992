/*
 * Target: field-token open (crypto/token.c). Input: a token, opened under a
 * fixed test keyring (keys 1 and 2, primary 2) for a fixed context. Random
 * bytes must fail cleanly: EG_ECORRUPT with the output zeroed, as the
 * header promises. The seed corpus holds real tokens under this keyring
 * (fz_token_keyring), so mutations start from ones that open.
 *
 * Also: the input sealed as a plaintext opens back to itself, and not for
 * another context; the same for format 2 under a fixed data key
 * (fz_token_data_key), and a format 2 open of the input fails as cleanly.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "fuzz.h"
#include "fuzz_token.h"

static eg_keyring *keys;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[256];
  FZ_CHECK(eg_crypto_init() == EG_OK, "eg_crypto_init");
  const char *path = fz_write_file("keyring", (const uint8_t *)fz_token_keyring,
                                   strlen(fz_token_keyring));
  FZ_CHECK(eg_keyring_load(path, &keys, err, sizeof err) == EG_OK, err);
  return 0;
}

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

static void check_open(const uint8_t *tok, size_t len) {
  size_t cap = len > EG_TOKEN_OVERHEAD ? len - EG_TOKEN_OVERHEAD : 0;
  uint8_t *out = malloc(cap ? cap : 1);
  size_t plen = 0;
  FZ_CHECK(out != NULL, "out of memory");
  memset(out, 0xA5, cap);
  eg_err e = eg_token_open(keys, &fz_token_ctx, tok, len, out, &plen);
  FZ_CHECK(e == EG_OK || e == EG_ECORRUPT, "open returned neither OK nor ECORRUPT");
  if (e == EG_OK) FZ_CHECK(plen == cap, "opened plaintext has the wrong length");
  else FZ_CHECK(all_zero(out, cap), "a failed open left bytes in out");
  free(out);
}

static void check_round_trip(const uint8_t *pt, size_t len) {
  static const eg_field_ctx other = {"acme", "message", "s1/1", "metadata"};
  uint8_t *tok = malloc(eg_token_len(len)), *out = malloc(len ? len : 1);
  size_t plen = 0;
  FZ_CHECK(tok && out, "out of memory");
  FZ_CHECK(eg_token_seal(keys, &fz_token_ctx, pt, len, tok) == EG_OK, "seal");
  FZ_CHECK(tok[0] == EG_TOKEN_VERSION, "sealed token has another version");
  FZ_CHECK(eg_token_open(keys, &fz_token_ctx, tok, eg_token_len(len), out, &plen) == EG_OK,
           "a sealed token does not open");
  FZ_CHECK(plen == len && (len == 0 || memcmp(out, pt, len) == 0), "round trip changed the bytes");
  FZ_CHECK(eg_token_open(keys, &other, tok, eg_token_len(len), out, &plen) == EG_ECORRUPT,
           "a token opened for another context");
  free(tok);
  free(out);
}

/* Format 2: under a data key, whatever the input's format byte says. */
static void check_dek(const uint8_t *in, size_t len) {
  static const eg_field_ctx other = {"acme", "message", "s1/1", "metadata"};
  size_t cap = len > EG_TOKEN_OVERHEAD ? len - EG_TOKEN_OVERHEAD : 0, plen = 0;
  uint8_t *out = malloc(len ? len : 1), *tok = malloc(eg_token_len(len));
  uint8_t version;
  FZ_CHECK(out && tok, "out of memory");
  memset(out, 0xA5, len);
  eg_err e = eg_token_open_dek(fz_token_data_key, &fz_token_ctx, in, len, out, &plen);
  FZ_CHECK(e == EG_OK || e == EG_ECORRUPT, "open_dek returned neither OK nor ECORRUPT");
  if (e == EG_OK) FZ_CHECK(plen == cap && in[0] == EG_TOKEN_VERSION_DEK, "opened a bad token");
  else FZ_CHECK(all_zero(out, cap), "a failed open_dek left bytes in out");
  e = eg_token_version(in, len, &version);
  FZ_CHECK(e == EG_ECORRUPT || (version == EG_TOKEN_VERSION || version == EG_TOKEN_VERSION_DEK),
           "eg_token_version accepted an unknown format");
  FZ_CHECK(eg_token_seal_dek(fz_token_data_key, 7, &fz_token_ctx, in, len, tok) == EG_OK,
           "seal_dek");
  FZ_CHECK(eg_token_open_dek(fz_token_data_key, &fz_token_ctx, tok, eg_token_len(len), out,
                             &plen) == EG_OK &&
               plen == len && (len == 0 || memcmp(out, in, len) == 0),
           "a format 2 round trip changed the bytes");
  FZ_CHECK(eg_token_open_dek(fz_token_data_key, &other, tok, eg_token_len(len), out, &plen) ==
               EG_ECORRUPT,
           "a format 2 token opened for another context");
  free(tok);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_open(data, size);
  check_round_trip(data, size);
  check_dek(data, size);
  return 0;
}
