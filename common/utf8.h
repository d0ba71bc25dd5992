/*
 * Cutting text without splitting a UTF-8 sequence: a log line or a status
 * message cut mid-character is no longer valid UTF-8, which JSON readers
 * and protobuf string parsers refuse.
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

#endif
