/*
 * Session metadata terms: see session_terms.h.
 */
#include "server/session_terms.h"

#include <stdlib.h>
#include <string.h>

#include "server/memory_svc.h"
#include "server/text_terms.h"

/* The hashed bytes: a domain byte, the key, a NUL, the value. Strings hold
 * no NUL (the wire walk refuses them), so a memory term (one word of a
 * text) never hashes the same bytes as a session term, and key "a",
 * value "bc" differs from key "ab", value "c". */
#define EG_SESSION_TERM_DOMAIN 's'

eg_err eg_session_term(eg_req *r, const eg_blind_ctx *ctx, const char *key, const char *value,
                       uint64_t *out) {
  size_t kn = strlen(key), vn = strlen(value);
  /* The pair is bounded by --max-metadata-bytes (or a request's size). */
  char *buf = eg_arena_alloc(r->arena, kn + vn + 2);
  if (!buf) return EG_ENOMEM;
  buf[0] = EG_SESSION_TERM_DOMAIN;
  memcpy(buf + 1, key, kn + 1);
  memcpy(buf + 2 + kn, value, vn);
  *out = eg_blind_word(ctx, buf, kn + vn + 2);
  return EG_OK;
}

static int eg_entry_cmp(const void *a, const void *b) {
  const eg_kv_entry *x = *(eg_kv_entry *const *)a, *y = *(eg_kv_entry *const *)b;
  int c = strcmp(x->key, y->key);
  return c ? c : strcmp(x->value, y->value);
}

eg_err eg_session_terms(eg_req *r, eg_kv_entry **entries, size_t n, uint64_t **out, size_t *nout) {
  *out = NULL;
  *nout = 0;
  if (n == 0) return EG_OK;
  /* Sorted so the entries indexed past the cap do not depend on the order
   * the client sent them in (n is at most EG_METADATA_ENTRIES_MAX). */
  eg_kv_entry **sorted = EG_ARENA_ARRAY(r->arena, eg_kv_entry *, n);
  uint64_t *h = EG_ARENA_ARRAY(r->arena, uint64_t, n < EG_SESSION_TERMS_MAX ? n : EG_SESSION_TERMS_MAX);
  eg_blind_ctx *ctx;
  eg_err e;
  if (!sorted || !h) return EG_ENOMEM;
  if ((e = eg_blind_ctx_of(r, &ctx))) return e;
  memcpy(sorted, entries, n * sizeof *sorted);
  qsort(sorted, n, sizeof *sorted, eg_entry_cmp);
  size_t k = 0;
  for (size_t i = 0; i < n && k < EG_SESSION_TERMS_MAX; i++) {
    if (i && eg_entry_cmp(&sorted[i - 1], &sorted[i]) == 0) continue;
    if ((e = eg_session_term(r, ctx, sorted[i]->key, sorted[i]->value, &h[k++]))) return e;
  }
  qsort(h, k, sizeof *h, eg_u64_cmp);
  size_t u = 0;
  for (size_t i = 0; i < k; i++)
    if (!u || h[u - 1] != h[i]) h[u++] = h[i];
  *out = h;
  *nout = u;
  return EG_OK;
}
