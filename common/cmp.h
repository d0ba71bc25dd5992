/*
 * qsort and bsearch comparators every layer shares (storage sorts posting
 * terms, the server blind tokens). Inline: one definition, no library to
 * link.
 */
#ifndef EG_COMMON_CMP_H
#define EG_COMMON_CMP_H

#include <stdint.h>

/* uint64_t, ascending. */
static inline int eg_u64_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

#endif
