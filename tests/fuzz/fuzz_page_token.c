/*
 * Target: page tokens (server/page_token.c). Input: a page_token as a
 * client sends it (a NUL-terminated string; a NUL inside the input ends it,
 * as it would after unpacking), opened for a ListMessages request under
 * the fixed test keyring of fuzz_token.h.
 *
 * Checked: opening answers EG_OK or EG_EINVAL with a message naming
 * page_token, and a position that fits; the input's bytes (up to the
 * longest position), sealed as a position, open back to themselves and
 * not for another request.
 */
#include <stdlib.h>
#include <string.h>

#include "engram/v1/session.pb-c.h"
#include "fuzz.h"
#include "fuzz_token.h"
#include "server/page_token.h"

static eg_srv srv;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[256];
  eg_keyring *keys = NULL;
  FZ_CHECK(eg_crypto_init() == EG_OK, "eg_crypto_init");
  const char *path = fz_write_file("keyring", (const uint8_t *)fz_token_keyring,
                                   strlen(fz_token_keyring));
  FZ_CHECK(eg_keyring_load(path, &keys, err, sizeof err) == EG_OK, err);
  srv.keys = keys;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A heap copy of exactly the string, so reading past its NUL is caught. */
  char *tok = strndup((const char *)data, size);
  eg_req r = {.srv = &srv, .tenant = "acme", .arena = eg_arena_new()};
  FZ_CHECK(tok && r.arena, "out of memory");
  Engram__V1__ListMessagesRequest in = ENGRAM__V1__LIST_MESSAGES_REQUEST__INIT;
  in.session_id = "s1";
  in.page_token = tok;
  uint8_t pos[EG_PAGE_POS_MAX];
  size_t n = 0;
  eg_err e = eg_page_token_open(&r, &in.base, pos, sizeof pos, &n);
  FZ_CHECK(e == EG_OK || e == EG_EINVAL, "open returned neither OK nor EINVAL");
  if (e == EG_OK) FZ_CHECK(n <= sizeof pos, "opened past the capacity");
  else FZ_CHECK(strncmp(r.msg, "page_token: ", 12) == 0, "the refusal does not name page_token");

  size_t plen = size < EG_PAGE_POS_MAX ? size : EG_PAGE_POS_MAX;
  char *sealed = NULL;
  FZ_CHECK(eg_page_token_seal(&r, &in.base, data, plen, &sealed) == EG_OK && sealed &&
               strlen(sealed) <= EG_PAGE_TOKEN_MAX,
           "seal");
  in.page_token = sealed;
  FZ_CHECK(eg_page_token_open(&r, &in.base, pos, sizeof pos, &n) == EG_OK, "a sealed token does not open");
  FZ_CHECK(n == plen && memcmp(pos, data, n) == 0, "round trip changed the position");
  in.newest_first = 1;
  FZ_CHECK(eg_page_token_open(&r, &in.base, pos, sizeof pos, &n) == EG_EINVAL,
           "a token opened for another request");
  eg_arena_free(r.arena);
  free(tok);
  return 0;
}
