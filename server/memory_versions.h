/*
 * Versioned keyword reads of memories (server/reindex.h, "Versioned
 * reads"): while the "memories" index is below EG_TOKENIZER_VERSION, a
 * query (SearchMemories) or a text compared for de-duplication is read by
 * every version from the index's up to EG_TOKENIZER_VERSION, and each
 * stored memory is matched with the terms of its own index_version (its
 * meta's). After the reindex only the current version is read, at no
 * extra cost.
 * Blind keys the same way (server/blind_key.h): while a blind-index
 * rotation runs, the terms are made under both read keys, and each memory
 * is matched with the terms of its own key (its meta's blind_key_id). A
 * memory's entries are all under one key, so nothing matches twice; the
 * two keys' terms are lined up by word, so a word's document frequency
 * counts its postings under both (scores as under one key).
 * Same rules as memory_svc.h (one eg_req, arena results).
 */
#ifndef EG_SERVER_MEMORY_VERSIONS_H
#define EG_SERVER_MEMORY_VERSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "server/blind_key.h"
#include "server/memory_svc.h"
#include "server/tokenizer.h"

/* A text's terms under versions from..EG_TOKENIZER_VERSION, for each
 * read key keys->id[k] (k < keys->n): n[v] of them under every key, and
 * with two keys lined up (terms[0][v][i] and terms[1][v][i] are one word:
 * eg_text_terms_lined), so that a word's document frequency is its
 * postings under both. */
typedef struct {
  unsigned from;
  const eg_blind_read *keys;
  const uint64_t *terms[EG_BLIND_READ_MAX][EG_TOKENIZER_VERSION + 1];
  size_t n[EG_TOKENIZER_VERSION + 1];
} eg_terms_versions;

/* The terms of query[0..len) (language lang) under every version a read
 * through t must use now (eg_index_read_from) and every key of keys
 * (kept: it must outlive *out), into *out. Returns EG_OK, EG_ENOMEM or a
 * storage error. */
eg_err eg_query_versions(eg_req *r, eg_txn *t, const eg_blind_read *keys, const char *lang,
                         const char *query, size_t len, eg_terms_versions *out);

/* The same for memory rec, whose term_hashes are at rec->index_version
 * under its blind_key_id (reused when there is one read key; with two
 * they are made again from the text, lined up): text is its plain text,
 * or NULL to open rec's text_token only if another version or key is
 * needed.
 * Returns EG_OK, EG_ECORRUPT (r->msg naming the memory) if the text does
 * not open, EG_ENOMEM or a storage error. */
eg_err eg_memory_versions(eg_req *r, eg_txn *t, const eg_blind_read *keys, const eg_memory_rec *rec,
                          const char *text, eg_terms_versions *out);

/* The postings of each (key, version)'s terms (user_id's), one position
 * map per pair (eg_postings_join over n_docs memories: a word's idf is
 * from its postings under every read key, so scores mid-rotation are the
 * scores under one key), and each version's query idf. */
typedef struct {
  const eg_terms_versions *tv;
  eg_pmap m[EG_BLIND_READ_MAX][EG_TOKENIZER_VERSION + 1];
  double query_idf[EG_TOKENIZER_VERSION + 1];
  size_t n;       /* entries in all the maps (a memory may be in several) */
  uint64_t reads; /* postings read in all */
} eg_pmaps;
eg_err eg_pmaps_join(eg_req *r, eg_txn *t, const char *user_id, const eg_terms_versions *tv,
                     size_t n_docs, eg_pmaps *out);

/* The version whose terms a memory with meta m is matched by: its meta's
 * index_version (1 for old layouts), within the versions p reads (the
 * index state says none is below them; a meta of layout 1 or 2 says 1
 * only because it does not know). */
unsigned eg_pmaps_version(const eg_pmaps *p, const eg_memory_meta *m);
/* The read key (index into p's keys) whose terms a memory with meta m is
 * matched by: its meta's blind_key_id; p's keys->n when it is under
 * neither read key (then it matches no term). */
unsigned eg_pmaps_key(const eg_pmaps *p, const eg_memory_meta *m);

/* What a memory matched by key k and version v (eg_pmaps_key,
 * eg_pmaps_version) shares with the terms: its entry in that map (NULL:
 * none, or k is no read key), and (each may be NULL) version v's query
 * idf and term count (0 when k is no read key). */
const eg_pmap_ent *eg_pmaps_find(const eg_pmaps *p, unsigned k, unsigned v, const uint8_t *pos,
                                 size_t len, double *query_idf, size_t *n_terms);

#endif
