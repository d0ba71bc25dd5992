/*
 * Target: the keyring parser (crypto/keyring.c eg_keyring_load). Input: a
 * keyring file's bytes, written to a scratch file (mode 0600) and loaded,
 * as engramd loads --keyring.
 *
 * Checked: a refusal is EG_EINVAL with a reason naming the file; a keyring
 * that loads has its primary among its keys (a token sealed under it opens)
 * and a blind-index key.
 */
#include <string.h>

#include "crypto/crypto.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  FZ_CHECK(eg_crypto_init() == EG_OK, "eg_crypto_init");
  return 0;
}

static void check_keyring(const eg_keyring *kr) {
  static const eg_field_ctx ctx = {"t", "session", "s", "summary"};
  static const uint8_t pt[3] = "abc";
  uint8_t tok[sizeof pt + EG_TOKEN_OVERHEAD], out[sizeof pt];
  size_t plen = 0;
  FZ_CHECK(eg_keyring_primary_id(kr) != 0, "primary id 0");
  FZ_CHECK(eg_keyring_blind_key_id(kr) != 0, "no blind-index key");
  FZ_CHECK(eg_token_seal(kr, &ctx, pt, sizeof pt, tok) == EG_OK, "seal");
  FZ_CHECK(eg_token_open(kr, &ctx, tok, sizeof tok, out, &plen) == EG_OK, "open");
  FZ_CHECK(plen == sizeof pt && memcmp(out, pt, plen) == 0, "round trip");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fz_write_file("keyring", data, size);
  char err[512] = "";
  eg_keyring *kr = NULL;
  eg_err e = eg_keyring_load(path, &kr, err, sizeof err);
  if (e == EG_OK) {
    check_keyring(kr);
    eg_keyring_free(kr);
    return 0;
  }
  FZ_CHECK(e == EG_EINVAL, "load failed with another error than EINVAL");
  FZ_CHECK(kr == NULL, "*out set on failure");
  FZ_CHECK(strncmp(err, path, strlen(path)) == 0, "the reason does not name the file");
  return 0;
}
