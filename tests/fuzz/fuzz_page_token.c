/*
 * Target: page tokens (server/page_token.c). Input: a page_token as a
 * client sends it (a NUL-terminated string; a NUL inside the input ends it,
 * as it would after unpacking), parsed with the capacity the first byte
 * picks.
 *
 * Checked: a token that parses fits the capacity and is exactly the token
 * the server would issue for those bytes; the input's bytes, issued as a
 * token, parse back to themselves.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "server/arena.h"
#include "server/page_token.h"

/* A message token is 9 bytes, a memory list token up to a few hundred. */
#define FZ_CAP_MAX 600

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t cap = (size_t)data[0] * FZ_CAP_MAX / 255;
  /* A heap copy of exactly the string, so reading past its NUL is caught. */
  char *tok = strndup((const char *)data + 1, size - 1);
  uint8_t *out = malloc(cap ? cap : 1);
  eg_arena *a = eg_arena_new();
  FZ_CHECK(tok && out && a, "out of memory");
  size_t n = 0;
  if (eg_page_token_parse(tok, out, cap, &n) == 0) {
    FZ_CHECK(n <= cap, "parsed past the capacity");
    const char *again = eg_page_token(a, out, n);
    FZ_CHECK(again && strcmp(again, tok) == 0, "issued token differs from the one parsed");
  }
  const char *issued = eg_page_token(a, data + 1, size - 1);
  uint8_t *back = malloc(size);
  FZ_CHECK(issued && back, "out of memory");
  FZ_CHECK(eg_page_token_parse(issued, back, size - 1, &n) == 0, "an issued token does not parse");
  FZ_CHECK(n == size - 1 && memcmp(back, data + 1, n) == 0, "issued token parsed to other bytes");
  free(back);
  eg_arena_free(a);
  free(out);
  free(tok);
  return 0;
}
