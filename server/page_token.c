#include "server/page_token.h"

#include <string.h>

const char *eg_page_token(eg_arena *a, const uint8_t *b, size_t n) {
  static const char digits[] = "0123456789abcdef";
  char *s = eg_arena_alloc(a, 2 * n + 1);
  if (!s) return NULL;
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = digits[b[i] >> 4];
    s[2 * i + 1] = digits[b[i] & 15];
  }
  return s;
}

static int eg_hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int eg_page_token_parse(const char *tok, uint8_t *out, size_t cap, size_t *n) {
  size_t len = strlen(tok);
  if (len % 2 || len / 2 > cap) return -1;
  for (size_t i = 0; i < len / 2; i++) {
    int hi = eg_hex_digit(tok[2 * i]), lo = eg_hex_digit(tok[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  *n = len / 2;
  return 0;
}
