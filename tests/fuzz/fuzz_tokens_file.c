/*
 * Target: the tokens-file parser (server/auth.c eg_auth_load). Input: a
 * tokens file's bytes, written to a scratch file and loaded, as engramd
 * loads --tokens.
 *
 * Checked: a refusal is EG_EINVAL with a reason; a file that loads is not
 * dev mode, and answers a bearer token whose hash is in it (the token
 * "fuzz", whose SHA-256 a seed holds) and refuses one that is not.
 */
#include <string.h>

#include "crypto/crypto.h"
#include "fuzz.h"
#include "server/auth.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  FZ_CHECK(eg_crypto_init() == EG_OK, "eg_crypto_init");
  return 0;
}

static void check_auth(const eg_auth *a) {
  static const char unknown[] = "Bearer not-in-any-seed";
  static const char known[] = "Bearer fuzz";
  const char *tenant = NULL;
  FZ_CHECK(!eg_auth_dev_mode(a), "a tokens file gave dev mode");
  eg_err e = eg_auth_check(a, known, sizeof known - 1, EG_ROLE_AGENT, &tenant);
  FZ_CHECK(e == EG_OK || e == EG_EUNAUTH || e == EG_EPERM, "check: unexpected error");
  if (e == EG_OK) FZ_CHECK(tenant && tenant[0] && strlen(tenant) <= 128, "tenant");
  e = eg_auth_check(a, unknown, sizeof unknown - 1, EG_ROLE_AGENT, &tenant);
  FZ_CHECK(e == EG_EUNAUTH, "an unknown token was accepted");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fz_write_file("tokens", data, size);
  char err[512] = "";
  eg_auth *a = NULL;
  eg_err e = eg_auth_load(path, &a, err, sizeof err);
  if (e == EG_OK) {
    check_auth(a);
    eg_auth_free(a);
    return 0;
  }
  FZ_CHECK(e == EG_EINVAL, "load failed with another error than EINVAL");
  FZ_CHECK(err[0] != '\0', "a refusal without a reason");
  return 0;
}
