/*
 * UTF-8 for the server, the client library and the CLI: telling a
 * well-formed sequence, and cutting text without splitting one (a log
 * line or a status message cut mid-character is no longer valid UTF-8,
 * which JSON readers and protobuf string parsers refuse). Header-only:
 * libengram is built without the rest of common/.
 */
#ifndef EG_COMMON_UTF8_H
#define EG_COMMON_UTF8_H

#include <stddef.h>

/* The longest prefix of s[0..len) of at most max bytes that ends on a
 * character boundary: max itself unless s[max] continues a sequence
 * (10xxxxxx), then back to where that sequence starts (at most 3 bytes).
 * Thread safety: pure. */
static inline size_t eg_utf8_cut(const char *s, size_t len, size_t max) {
  if (len <= max) return len;
  size_t n = max;
  while (n > 0 && max - n < 3 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  return n;
}

/* Length of the well-formed UTF-8 sequence at p (n bytes left, n >= 1),
 * or 0. The ranges of the second byte are those of Unicode table 3-7: they
 * rule out overlongs (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and
 * code points above U+10FFFF (F4 90.., F5..FF). Thread safety: pure. */
static inline size_t eg_utf8_seq_len(const unsigned char *p, size_t n) {
  unsigned lo = 0x80, hi = 0xBF;
  size_t len;
  if (p[0] < 0x80) return 1;
  if (p[0] >= 0xC2 && p[0] <= 0xDF) len = 2;
  else if (p[0] == 0xE0) len = 3, lo = 0xA0;
  else if (p[0] == 0xED) len = 3, hi = 0x9F;
  else if (p[0] >= 0xE1 && p[0] <= 0xEF) len = 3;
  else if (p[0] == 0xF0) len = 4, lo = 0x90;
  else if (p[0] >= 0xF1 && p[0] <= 0xF3) len = 4;
  else if (p[0] == 0xF4) len = 4, hi = 0x8F;
  else return 0; /* continuation byte, C0/C1 overlong lead, or F5..FF */
  if (n < len || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  return len;
}

#endif
