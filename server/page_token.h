/* Page tokens: the hex of a storage position. Opaque to clients; the
 * services decide what the bytes mean and refuse what does not decode. */
#ifndef EG_SERVER_PAGE_TOKEN_H
#define EG_SERVER_PAGE_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "server/arena.h"

/* The token of b[0..n), in a; NULL when out of memory. */
const char *eg_page_token(eg_arena *a, const uint8_t *b, size_t n);
/* Decodes tok into out (at most cap bytes) and sets *n. Returns -1 if tok
 * is not lowercase hex of at most cap bytes. */
int eg_page_token_parse(const char *tok, uint8_t *out, size_t cap, size_t *n);

#endif
