/* Versioned keyword reads of memories (memory_versions.h). */
#include "server/memory_versions.h"

#include <string.h>

#include "server/convert.h"
#include "server/reindex.h"
#include "server/text_terms.h"

/* text's terms at every version of out but `have` (already set). */
static eg_err eg_terms_fill(eg_req *r, const eg_blind_ctx *ctx, const char *lang,
                            const char *text, size_t len, unsigned have, eg_terms_versions *out) {
  for (unsigned v = out->from; v <= EG_TOKENIZER_VERSION; v++) {
    if (v == have) continue;
    uint64_t *terms = EG_ARENA_ARRAY(r->arena, uint64_t, EG_TEXT_TERMS_MAX);
    if (!terms) return EG_ENOMEM;
    eg_err e = eg_text_terms(ctx, v, lang, text, len, terms, NULL, EG_TEXT_TERMS_MAX, &out->n[v],
                             NULL, NULL);
    if (e != EG_OK) return e;
    out->terms[v] = terms;
  }
  return EG_OK;
}

eg_err eg_query_versions(eg_req *r, eg_txn *t, const eg_blind_ctx *ctx, const char *lang,
                         const char *query, size_t len, eg_terms_versions *out) {
  memset(out, 0, sizeof *out);
  eg_err e = eg_index_read_from(t, EG_INDEX_MEMORIES, &out->from);
  return e ? e : eg_terms_fill(r, ctx, lang, query, len, 0, out);
}

eg_err eg_memory_versions(eg_req *r, eg_txn *t, const eg_memory_rec *rec, const char *text,
                          eg_terms_versions *out) {
  unsigned have = rec->index_version ? rec->index_version : EG_TOKENIZER_V1;
  memset(out, 0, sizeof *out);
  eg_err e = eg_index_read_from(t, EG_INDEX_MEMORIES, &out->from);
  if (e) return e;
  if (have >= out->from && have <= EG_TOKENIZER_VERSION) {
    out->terms[have] = rec->term_hashes;
    out->n[have] = rec->n_term_hashes;
  } else {
    have = 0; /* a version no read uses (the state says none is left) */
  }
  if (out->from == EG_TOKENIZER_VERSION && have == EG_TOKENIZER_VERSION) return EG_OK;
  /* A reindex is under way: the other versions from the text itself. */
  size_t len;
  char *opened;
  eg_blind_ctx *ctx;
  if (!text) {
    if ((e = eg_field_open(r, rec->user_id, "memory", rec->memory_id, "text", &rec->text_token,
                           &opened, &len)))
      return e;
    text = opened;
  } else {
    len = strlen(text);
  }
  if ((e = eg_blind_ctx_of(r, &ctx))) return e;
  return eg_terms_fill(r, ctx, rec->language, text, len, have, out);
}

eg_err eg_pmaps_join(eg_req *r, eg_txn *t, const char *user_id, const eg_terms_versions *tv,
                     size_t n_docs, eg_pmaps *out) {
  memset(out, 0, sizeof *out);
  out->tv = tv;
  for (unsigned v = tv->from; v <= EG_TOKENIZER_VERSION; v++) {
    eg_err e = eg_pmap_init(&out->m[v], r->arena, 64);
    if (!e)
      e = eg_postings_join(r, t, user_id, tv->terms[v], tv->n[v], n_docs, &out->m[v],
                           &out->query_idf[v]);
    if (e) return e;
    out->n += out->m[v].n;
    for (size_t i = 0; i < out->m[v].n; i++) out->reads += out->m[v].ents[i].count;
  }
  return EG_OK;
}

unsigned eg_pmaps_version(const eg_pmaps *p, const eg_memory_meta *m) {
  unsigned v = m->index_version;
  return v < p->tv->from ? p->tv->from : v > EG_TOKENIZER_VERSION ? EG_TOKENIZER_VERSION : v;
}

const eg_pmap_ent *eg_pmaps_find(const eg_pmaps *p, unsigned v, const uint8_t *pos, size_t len,
                                 double *query_idf, size_t *n_terms) {
  if (query_idf) *query_idf = p->query_idf[v];
  if (n_terms) *n_terms = p->tv->n[v];
  return p->m[v].n ? eg_pmap_find(&p->m[v], pos, len) : NULL;
}
