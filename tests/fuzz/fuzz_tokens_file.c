/*
 * Target: the tokens-file parser (server/auth.c eg_auth_load). Input: a
 * tokens file's bytes, written to a scratch file and loaded, as engramd
 * loads --tokens.
 *
 * Checked: a refusal is EG_EINVAL with a reason, and the line it names is
 * a line of the file; a file with a NUL byte does not load (the words
 * after it would go unread); a file that loads is not dev mode, and answers a
 * bearer token whose hash is in it (the token "fuzz", whose SHA-256 a seed
 * holds) and refuses one that is not.
 */
#include <stdio.h>
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
  char tenant[EG_ID_MAX + 1], why[256];
  FZ_CHECK(!eg_auth_dev_mode(a), "a tokens file gave dev mode");
  eg_auth_caller who = {.authz = known, .authz_len = sizeof known - 1};
  eg_err e = eg_auth_check(a, &who, EG_ROLE_AGENT, tenant, why, sizeof why);
  FZ_CHECK(e == EG_OK || e == EG_EUNAUTH || e == EG_EPERM, "check: unexpected error");
  if (e == EG_OK) FZ_CHECK(tenant[0] && strlen(tenant) <= 128, "tenant");
  who = (eg_auth_caller){.authz = unknown, .authz_len = sizeof unknown - 1};
  e = eg_auth_check(a, &who, EG_ROLE_AGENT, tenant, why, sizeof why);
  FZ_CHECK(e == EG_EUNAUTH, "an unknown token was accepted");
}

/* Lines of d[0..n): a last line without its newline counts. */
static size_t count_lines(const uint8_t *d, size_t n) {
  size_t lines = 0;
  for (size_t i = 0; i < n; i++) lines += d[i] == '\n';
  return lines + (n > 0 && d[n - 1] != '\n');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fz_write_file("tokens", data, size);
  char err[512] = "";
  eg_auth *a = NULL;
  eg_err e = eg_auth_load(path, NULL, &a, err, sizeof err);
  if (e == EG_OK) {
    FZ_CHECK(!memchr(data, '\0', size), "a file with a NUL byte loaded");
    check_auth(a);
    eg_auth_free(a);
    return 0;
  }
  FZ_CHECK(e == EG_EINVAL, "load failed with another error than EINVAL");
  FZ_CHECK(err[0] != '\0', "a refusal without a reason");
  unsigned line;
  if (sscanf(err, "line %u:", &line) == 1)
    FZ_CHECK(line >= 1 && line <= count_lines(data, size), "the refusal names a line not in the file");
  return 0;
}
