/*
 * Private to the engram.v1.MemoryService files (svc_memory.c: Create, Get,
 * Update, Delete and the method table; memory_search.c: the position map,
 * filters, List and Search; memory_fields.c: metadata, namespace, language
 * and the filters' blind tokens; svc_memory_batch.c: BatchCreateMemories,
 * BatchDeleteMemories): the helpers they share. Every function
 * takes the call's eg_req; what it returns lives in r->arena (or is
 * deferred on it) and is valid until the call ends. On an error the
 * message is in r->msg.
 * StoreService (svc_store.c) and SessionService (svc_session.c,
 * svc_message_search.c) take eg_embedding_check and eg_blind_ctx_of from
 * here too, so an embedding is checked one way everywhere; SearchMessages
 * also eg_time_us, eg_check_unit and the position map.
 * Thread safety: one eg_req, one thread.
 */
#ifndef EG_SERVER_MEMORY_SVC_H
#define EG_SERVER_MEMORY_SVC_H

#include <stddef.h>
#include <stdint.h>

#include "engram/v1/memory.pb-c.h"
#include "server/service.h"

/* When more than 1/EG_SCAN_SHARE of a user's memories are candidates, a
 * sequential scan of the meta values replaces per-candidate lookups. */
#define EG_SCAN_SHARE 8

/* ---- svc_memory.c ---- */

/* CreateMemory's two halves (an eg_method's prepare and apply), which
 * BatchCreateMemories runs per request. */
eg_err eg_create_memory_prepare(eg_req *r, const ProtobufCMessage *msg);
eg_err eg_create_memory_apply(eg_req *r, eg_txn *t);

/* Deletes memory_id (soft: state DELETED, or purge: gone with every index
 * entry), as DeleteMemory does, after checking expected_version (0: any).
 * *purged is set when purged; *after (may be NULL) gets the record as it
 * now is (NULL when purged). Returns EG_OK, EG_ENOTFOUND (r->msg naming
 * it), EG_EABORTED (version), or a storage error. */
eg_err eg_memory_delete(eg_req *r, eg_txn *t, const char *memory_id, int purge,
                        int64_t expected_version, eg_memory_rec **after, int *purged);

/* Sets r->msg to "<field>: <what>"; returns EG_EINVAL. */
eg_err eg_mem_invalid(eg_req *r, const char *field, const char *what);

/* 1 if a memory expiring at expire_us (0: never) has expired at now_us,
 * else 0. */
int eg_memory_expired(int64_t expire_us, int64_t now_us);

/* The record of memory_id into *out (set only on success; freed when the
 * call ends). Returns EG_ENOTFOUND (r->msg naming it) if there is none, or
 * if it has expired and allow_expired is 0; EG_ECORRUPT if it does not
 * decode; EG_ENOMEM. */
eg_err eg_memory_load(eg_req *r, eg_txn *t, const char *memory_id, int allow_expired,
                      eg_memory_rec **out);

/* Returns EG_OK if v is in [0, 1], else EG_EINVAL naming field. */
eg_err eg_check_unit(eg_req *r, const char *field, float v);

/* Returns EG_OK if type is a MemoryType other than UNSPECIFIED, else
 * EG_EINVAL naming field. */
eg_err eg_check_type(eg_req *r, const char *field, int type);

/* Bounds of an embedding's values, far outside any model's output, that
 * keep every float32 sum of squares and dot product the scores take (up
 * to EG_MEMORY_DIM_MAX terms) finite and clear of underflow: values within
 * +-1e15 (squares <= 1e30, sums <= 4.1e33 < FLT_MAX) and a norm of at least
 * 1e-15 (then some value is >= 1.5e-17, whose square is a normal float). */
#define EG_EMBEDDING_VALUE_MAX 1e15f
#define EG_EMBEDDING_NORM_MIN 1e-15f

/* Checks v[0..n) (at most EG_MEMORY_DIM_MAX finite values within
 * +-EG_EMBEDDING_VALUE_MAX, norm at least EG_EMBEDDING_NORM_MIN)
 * and copies it, aligned, into the arena: *out (NULL when n is 0) and its
 * Euclidean norm *norm (0 when n is 0). Returns EG_OK, EG_EINVAL naming
 * field, or EG_ENOMEM. */
eg_err eg_embedding_check(eg_req *r, const char *field, const float *v, size_t n, float **out,
                          float *norm);

/* Returns EG_OK if dim is 0 or the user has no embeddings yet or theirs
 * have dim dimensions; EG_EINVAL naming field if not; a storage error. */
eg_err eg_dim_check(eg_req *r, eg_txn *t, const char *user_id, const char *field, size_t dim);

/* ts (may be NULL: 0) in microseconds since 1970 into *us. Returns EG_OK,
 * or EG_EINVAL naming field if ts is not in 1970..9999. */
eg_err eg_time_us(eg_req *r, const char *field, const Google__Protobuf__Timestamp *ts, int64_t *us);

/* The blind token of category under ctx; 0 for "" (no category). */
uint64_t eg_category_hash(const eg_blind_ctx *ctx, const char *category);

/* The blind token of tag under ctx. */
uint64_t eg_tag_hash(const eg_blind_ctx *ctx, const char *tag);

/* Returns EG_OK if category fits (at most 256 bytes), else EG_EINVAL naming
 * field. */
eg_err eg_category_check(eg_req *r, const char *field, const char *category);

/* Checks tags[0..n) (at most EG_MEMORY_TAGS_MAX given, each 1..128 bytes,
 * at most max once repeats are dropped) into *out (an arena array of the caller's strings, the first of
 * each repeat kept) and *nout. Returns EG_OK, EG_EINVAL naming field, or
 * EG_ENOMEM. */
eg_err eg_tags_check(eg_req *r, const char *field, char **tags, size_t n, size_t max,
                     char ***out, size_t *nout);

/* rec as the API shows it, its text and labels opened, into *out (set only
 * on success; the arena's, and it may point into rec). The embedding is
 * read from t only when with_embedding. Returns EG_OK, EG_ECORRUPT (r->msg
 * naming the memory) if a field does not open, EG_ENOMEM, or a storage
 * error. */
eg_err eg_memory_to_api(eg_req *r, eg_txn *t, const eg_memory_rec *rec, int with_embedding,
                        Engram__V1__Memory **out);

/* Every blind token of rec (terms, category, tags, agent, source,
 * namespace, metadata) made again under ctx, the write key's
 * (eg_blind_ctx_of: r->blind_key_used, which rec is stamped with), from
 * its sealed fields. Returns EG_OK, EG_ECORRUPT or EG_EERASED (r->msg
 * naming the field) when one does not open, EG_ENOMEM. */
eg_err eg_memory_blind_rehash(eg_req *r, const eg_blind_ctx *ctx, eg_memory_rec *rec);

/* rec's term_hashes (arena), flags (the polarity) and index_version: text's
 * under EG_TOKENIZER_VERSION in rec->language. Also what the background
 * reindex (server/reindex.h) rewrites an older memory with. Returns EG_OK
 * or EG_ENOMEM. */
eg_err eg_text_index(eg_req *r, const eg_blind_ctx *ctx, const char *text, size_t len,
                     eg_memory_rec *rec);

/* A blind-index context for r's tenant under the write key (the store's
 * blind-index key id, or a running rotation's target: eg_blind_key_of,
 * server/blind_key.h; defined in blind_key.c) into *out, wiped when the
 * call ends; r->blind_key_used gets the key id, which the records written
 * with it carry (blind_key_id) and which the apply checks again.
 * Queries take eg_blind_read_ctxs instead. Returns EG_OK, EG_ENOMEM, the
 * error of eg_blind_key_of, or EG_EINVAL when the keyring lacks that key. */
eg_err eg_blind_ctx_of(eg_req *r, eg_blind_ctx **out);

/* ---- svc_memory_batch.c: the write methods of the table ---- */

/* BatchCreateMemories and BatchDeleteMemories (eg_method prepare and
 * apply). */
eg_err eg_batch_create_prepare(eg_req *r, const ProtobufCMessage *msg);
eg_err eg_batch_create_apply(eg_req *r, eg_txn *t);
eg_err eg_batch_delete_prepare(eg_req *r, const ProtobufCMessage *msg);
eg_err eg_batch_delete_apply(eg_req *r, eg_txn *t);

/* ---- memory_fields.c ---- */

/* Longest string eg_label_hash takes; longest namespace and label. */
#define EG_LABEL_HASH_MAX 256
#define EG_NAMESPACE_MAX 128
#define EG_NAMESPACE_LABEL_MAX 64

/* The blind token of s[0..n) (at most EG_LABEL_HASH_MAX bytes) in its
 * domain: a byte no word starts with, one per kind of label. */
uint64_t eg_label_hash(const eg_blind_ctx *ctx, char domain, const char *s, size_t n);

/* The blind tokens of an agent_id and a source_session_id; 0 for "". */
uint64_t eg_agent_hash(const eg_blind_ctx *ctx, const char *agent_id);
uint64_t eg_source_hash(const eg_blind_ctx *ctx, const char *session_id);

/* The blind token of the namespace path ns[0..len) (a whole namespace or a
 * prefix of one that ends at a label). */
uint64_t eg_namespace_hash(const eg_blind_ctx *ctx, const char *ns, size_t len);

/* Returns EG_OK if ns is "" or 1 .. EG_MEMORY_NS_HASHES_MAX labels of
 * [A-Za-z0-9_.-], each 1 .. EG_NAMESPACE_LABEL_MAX bytes, joined by '/',
 * EG_NAMESPACE_MAX bytes in all; else EG_EINVAL naming field. */
eg_err eg_namespace_check(eg_req *r, const char *field, const char *ns);

/* Returns EG_OK if lang is "" or a BCP 47 tag (eg_lang_check), else
 * EG_EINVAL naming field. */
eg_err eg_language_check(eg_req *r, const char *field, const char *lang);

/* rec->namespace_ = ns (checked) and rec->namespace_hashes: the token of
 * each prefix ending at a label. Returns EG_OK or EG_ENOMEM. */
eg_err eg_memory_namespace_set(eg_req *r, const eg_blind_ctx *ctx, const char *ns,
                               eg_memory_rec *rec);

/* rec->agent_hash and rec->source_hash from its ids. */
void eg_memory_ids_hash(const eg_blind_ctx *ctx, eg_memory_rec *rec);

/* Checks md[0..n) (at most EG_MEMORY_MD_HASHES_MAX entries, then
 * eg_metadata_pack's rules) and seals it for memory_id (of user, under
 * its data key) into
 * rec->metadata_token (empty for none), its pair tokens (eg_session_term)
 * into rec->metadata_hashes. Returns EG_OK, EG_EINVAL naming field, or
 * EG_ENOMEM. */
eg_err eg_memory_metadata_seal(eg_req *r, const char *field, const char *user,
                               const char *memory_id, Engram__V1__Memory__MetadataEntry **md,
                               size_t n, eg_memory_rec *rec);

/* Opens rec's metadata (under rec->user_id's data key) into m->metadata.
 * EG_ECORRUPT or EG_EERASED (r->msg naming the memory) if it does not
 * open; EG_ENOMEM. */
eg_err eg_memory_metadata_open(eg_req *r, const eg_memory_rec *rec, Engram__V1__Memory *m);

/* ---- memory_search.c: the position map (postings joins) ---- */

typedef struct {
  const uint8_t *pos;
  size_t len;
  uint32_t count; /* query (or new memory) terms this memory has */
  double idf;     /* their idf sum */
} eg_pmap_ent;

/* Positions to entries: entries in a dense array (iterated in insertion
 * order), an open-addressing table of their indexes + 1 (0: empty). */
typedef struct {
  eg_arena *a;
  uint32_t *slots;
  size_t cap;
  eg_pmap_ent *ents;
  size_t n, ents_cap;
} eg_pmap;

/* Sets up m, empty, in arena a, sized for about cap entries (it grows).
 * Returns EG_OK or EG_ENOMEM. */
eg_err eg_pmap_init(eg_pmap *m, eg_arena *a, size_t cap);

/* The index in m->ents of position p[0..n)'s entry into *idx, the entry
 * added (zeroed, p copied) if new. Returns EG_OK or EG_ENOMEM. */
eg_err eg_pmap_add(eg_pmap *m, const uint8_t *p, size_t n, uint32_t *idx);

/* The entry of position p[0..n), or NULL; valid until the next add to m. */
const eg_pmap_ent *eg_pmap_find(const eg_pmap *m, const uint8_t *p, size_t n);

/* Adds every posting (user_id's) of n words to the maps: terms[k][0..n)
 * are the words' tokens under read key k, m[k] that key's map (k <
 * n_keys <= EG_BLIND_READ_MAX; with two keys, lined up: terms[0][i] and
 * terms[1][i] one word, eg_text_terms_lined). An entry's count is how many
 * of the words its memory has, its idf their idf sum over n_docs memories,
 * a word's document frequency its postings under every key (a memory's
 * postings are all under its own key: none is counted twice), so a
 * blind-index rotation changes no idf. *query_idf gets the idf sum of all
 * the words. Returns EG_OK, EG_ENOMEM or a storage error. */
eg_err eg_postings_join(eg_req *r, eg_txn *t, const char *user_id, unsigned n_keys,
                        const uint64_t *const *terms, size_t n, size_t n_docs, eg_pmap *const *m,
                        double *query_idf);

/* qsort comparator of eg_memory_pos: bytewise, a prefix first. */
int eg_pos_cmp(const void *a, const void *b);

/* The memory_id at the end of position pos[0..len) into *id (an arena
 * string). Returns EG_OK, EG_ECORRUPT if pos is too short, or EG_ENOMEM. */
eg_err eg_pos_to_id(eg_req *r, const uint8_t *pos, size_t len, char **id);

/* ---- memory_search.c: the read methods of the table ---- */

/* ListMemories (an eg_method .read): the user's memories matching the
 * filter, newest first or by importance, one page into r->resp (the
 * arena's). Returns EG_OK, EG_EINVAL (r->msg naming the field),
 * EG_ECORRUPT, EG_ENOMEM or a storage error. */
eg_err eg_list_memories(eg_req *r, const ProtobufCMessage *msg);

/* SearchMemories (an eg_method .read): the user's top_k ACTIVE memories
 * matching the filter by the hybrid keyword, vector, importance and
 * recency score into r->resp (the arena's). Returns EG_OK, EG_EINVAL
 * (r->msg naming the field), EG_ECORRUPT, EG_ENOMEM or a storage error. */
eg_err eg_search_memories(eg_req *r, const ProtobufCMessage *msg);

#endif
