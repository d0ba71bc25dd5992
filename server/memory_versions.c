/* Versioned keyword reads of memories (memory_versions.h). */
#include "server/memory_versions.h"

#include <string.h>

#include "server/convert.h"
#include "server/reindex.h"
#include "server/text_terms.h"

/* text's terms at every version of out but have_v (already set; 0:
 * none), under every read key, lined up. */
static eg_err eg_terms_fill(eg_req *r, const char *lang, const char *text, size_t len,
                            unsigned have_v, eg_terms_versions *out) {
  for (unsigned v = out->from; v <= EG_TOKENIZER_VERSION; v++) {
    if (v == have_v) continue;
    uint64_t *terms[EG_BLIND_READ_MAX];
    for (unsigned k = 0; k < out->keys->n; k++)
      if (!(out->terms[k][v] = terms[k] = EG_ARENA_ARRAY(r->arena, uint64_t, EG_TEXT_TERMS_MAX)))
        return EG_ENOMEM;
    eg_err e = eg_text_terms_lined(out->keys, v, lang, text, len, terms, EG_TEXT_TERMS_MAX,
                                   &out->n[v]);
    if (e != EG_OK) return e;
  }
  return EG_OK;
}

eg_err eg_query_versions(eg_req *r, eg_txn *t, const eg_blind_read *keys, const char *lang,
                         const char *query, size_t len, eg_terms_versions *out) {
  memset(out, 0, sizeof *out);
  out->keys = keys;
  eg_err e = eg_index_read_from(t, EG_INDEX_MEMORIES, &out->from);
  return e ? e : eg_terms_fill(r, lang, query, len, 0, out);
}

eg_err eg_memory_versions(eg_req *r, eg_txn *t, const eg_blind_read *keys, const eg_memory_rec *rec,
                          const char *text, eg_terms_versions *out) {
  unsigned have = rec->index_version ? rec->index_version : EG_TOKENIZER_V1;
  memset(out, 0, sizeof *out);
  out->keys = keys;
  eg_err e = eg_index_read_from(t, EG_INDEX_MEMORIES, &out->from);
  if (e) return e;
  /* The stored terms are sorted by token: with two read keys they would
   * not line up with the other key's, so they are made again. */
  if (keys->n == 1 && eg_blind_read_pick(keys, rec->blind_key_id) == 0 && have >= out->from &&
      have <= EG_TOKENIZER_VERSION) {
    out->terms[0][have] = rec->term_hashes;
    out->n[have] = rec->n_term_hashes;
  } else {
    have = 0; /* a version or key no read uses (the state says none is left) */
  }
  if (out->from == EG_TOKENIZER_VERSION && have == EG_TOKENIZER_VERSION) return EG_OK;
  /* A reindex or a blind-index rotation is under way: the versions and
   * keys not reused from the text itself. */
  size_t len;
  char *opened;
  if (!text) {
    if ((e = eg_field_open(r, rec->user_id, "memory", rec->memory_id, "text", &rec->text_token,
                           &opened, &len)))
      return e;
    text = opened;
  } else {
    len = strlen(text);
  }
  return eg_terms_fill(r, rec->language, text, len, have, out);
}

eg_err eg_pmaps_join(eg_req *r, eg_txn *t, const char *user_id, const eg_terms_versions *tv,
                     size_t n_docs, eg_pmaps *out) {
  memset(out, 0, sizeof *out);
  out->tv = tv;
  for (unsigned v = tv->from; v <= EG_TOKENIZER_VERSION; v++) {
    eg_pmap *m[EG_BLIND_READ_MAX];
    const uint64_t *terms[EG_BLIND_READ_MAX];
    for (unsigned k = 0; k < tv->keys->n; k++) {
      m[k] = &out->m[k][v];
      terms[k] = tv->terms[k][v];
      eg_err e = eg_pmap_init(m[k], r->arena, 64);
      if (e) return e;
    }
    eg_err e = eg_postings_join(r, t, user_id, tv->keys->n, terms, tv->n[v], n_docs, m,
                                &out->query_idf[v]);
    if (e) return e;
    for (unsigned k = 0; k < tv->keys->n; k++) {
      out->n += m[k]->n;
      for (size_t i = 0; i < m[k]->n; i++) out->reads += m[k]->ents[i].count;
    }
  }
  return EG_OK;
}

unsigned eg_pmaps_version(const eg_pmaps *p, const eg_memory_meta *m) {
  unsigned v = m->index_version;
  return v < p->tv->from ? p->tv->from : v > EG_TOKENIZER_VERSION ? EG_TOKENIZER_VERSION : v;
}

unsigned eg_pmaps_key(const eg_pmaps *p, const eg_memory_meta *m) {
  return eg_blind_read_pick(p->tv->keys, m->blind_key_id);
}

const eg_pmap_ent *eg_pmaps_find(const eg_pmaps *p, unsigned k, unsigned v, const uint8_t *pos,
                                 size_t len, double *query_idf, size_t *n_terms) {
  int known = k < p->tv->keys->n;
  if (query_idf) *query_idf = known ? p->query_idf[v] : 0;
  if (n_terms) *n_terms = known ? p->tv->n[v] : 0;
  return known && p->m[k][v].n ? eg_pmap_find(&p->m[k][v], pos, len) : NULL;
}
