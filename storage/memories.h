/*
 * storage: memories, their per-user indexes, the blind-index postings, the
 * per-user counters, and the bounded erasure of a user. Part of the storage
 * API (storage.h includes this header); same transaction rules.
 *
 * Key layout (u8len = one length byte; BE = big-endian; T = tenant,
 * U = user_id; pos = create_us u64 BE | memory_id, a memory's position in
 * its user's range, newest last):
 *   memories          u8len T | memory_id            -> MemoryRecord
 *   memories_by_user  u8len T | u8len U | pos        -> meta (below)
 *   memory_vectors    u8len T | u8len U | pos        -> float32 LE [dim]
 *   memory_terms      u8len T | u8len U | term u64 BE | memory_id -> create_us u64 BE
 *   memory_users      u8len T | u8len U              -> counters (below)
 *                     u8len T | u8len U | 0x00 "erase" -> erasure progress
 *
 * meta, the fixed-layout value that lets search, de-duplication and
 * listing filter and score without decoding a record (all LE):
 *   u8 layout (1) | u8 state | u8 type | u8 flags | u16 dim | u16 n_tags |
 *   u32 n_terms | f32 importance | f32 confidence | f32 norm |
 *   i64 create_us | i64 update_us | i64 expire_us | u64 category_hash |
 *   u64 tag_hash[n_tags] | (layout 2, dim > 0) f32 qscale | u32 qsum | int8 q[dim]
 * where q is the embedding quantized (q[i] = round(v[i] / qscale), qscale =
 * max |v[i]| / 127, qsum = sum |q[i]|): search ranks by it first and
 * rescores exactly.
 * Layout 3 (every put from schema 6 on) adds what the filters and the
 * reindex read, so that they too need no record: the record's
 * index_version, agent_hash, source_hash, namespace_hashes and
 * metadata_hashes (the placement is memories.c's; eg_memory_meta below is
 * the contract). Layout 4 (every put from schema 8 on) adds
 * the record's blind_key_id. Layouts 1 and 2 stay readable: their
 * index_version is 1 and has_filters 0 (a filter on them reads the
 * record); 1 to 3 read blind_key_id 0 (the row's legacy key).
 * counters: u8 layout (1) | u8 0 | u16 0 | u32 dim | u64 count[4] (by
 * state, index 0 unused; SUPERSEDED, state 4, is not counted: only the
 * ACTIVE count limits anything).
 *
 * The record is the truth; meta, vector and postings are derived from it by
 * eg_store_memory_put, which also keeps the counters.
 */
#ifndef EG_STORAGE_MEMORIES_H
#define EG_STORAGE_MEMORIES_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engram/storage/v1/memory_records.pb-c.h"

typedef Engram__Storage__V1__MemoryRecord eg_memory_rec;
typedef struct eg_txn eg_txn;

#define EG_MEMORY_DIM_MAX 4096
#define EG_MEMORY_TAGS_MAX 64
/* Most namespace_hashes (a namespace's labels) and metadata_hashes (its
 * pairs) one record may have: eg_store_memory_put refuses more (EG_EINVAL). */
#define EG_MEMORY_NS_HASHES_MAX 8
#define EG_MEMORY_MD_HASHES_MAX 64
/* MemoryRecord.flags */
#define EG_MEMORY_F_NEGATED 1u
/* engram.v1.MemoryState values, as stored. */
enum { EG_MSTATE_ACTIVE = 1, EG_MSTATE_DUPLICATE = 2, EG_MSTATE_DELETED = 3, EG_MSTATE_SUPERSEDED = 4 };
/* Position of a memory in its user's range: create_us u64 BE | memory_id. */
#define EG_MEMORY_POS_MAX (8 + 128)

typedef struct {
  uint8_t buf[EG_MEMORY_POS_MAX];
  size_t len;
} eg_memory_pos;

/* A decoded meta. tag_hashes points into the LMDB value (unaligned u64 LE;
 * read with eg_memory_meta_tag): valid until the txn ends or changes. */
typedef struct {
  int state, type;
  unsigned flags;
  unsigned dim, n_tags, n_terms;
  float importance, confidence, norm;
  int64_t create_us, update_us, expire_us;
  uint64_t category_hash;
  const uint8_t *tag_hashes;
  /* The quantized embedding (dim bytes, in the LMDB value like tag_hashes)
   * and its scale; NULL/0 when there is none. */
  const int8_t *qvec;
  float qscale;
  uint32_t qsum; /* sum of |qvec[i]| */
  /* Tokenizer version of the memory's postings (MemoryRecord.index_version;
   * 1 for layouts 1 and 2). */
  unsigned index_version;
  /* Layout 3: the record's filter hashes (ns_hashes, md_hashes: unaligned
   * u64 LE in the LMDB value, read with eg_memory_meta_hash). 0 for
   * layouts 1 and 2, whose filters the caller checks on the record. */
  int has_filters;
  /* MemoryRecord.blind_key_id: the key its blind tokens are under (0: the
   * blind-index row's legacy key, server/blind_key.h). */
  uint32_t blind_key_id;
  uint64_t agent_hash, source_hash;
  unsigned n_ns, n_md;
  const uint8_t *ns_hashes, *md_hashes;
} eg_memory_meta;

typedef struct {
  uint32_t dim;       /* fixed by the user's first embedding; 0: none yet */
  uint64_t count[4];  /* memories by state (index = state) */
} eg_memory_counters;

typedef struct {
  uint64_t sessions, messages, memories;
  uint64_t steps; /* transactions the erasure took */
} eg_erase_counts;

/* Tag hash i of m. */
uint64_t eg_memory_meta_tag(const eg_memory_meta *m, unsigned i);
/* Hash i of an unaligned u64 LE array (ns_hashes, md_hashes). */
uint64_t eg_memory_meta_hash(const uint8_t *hashes, unsigned i);
/* rec's position (create time, then id): the order of the user's memories. */
void eg_memory_pos_of(const eg_memory_rec *rec, eg_memory_pos *pos);
/* The memory_id and create_us of a position. */
void eg_memory_pos_split(const eg_memory_pos *p, int64_t *create_us, const char **id,
                         size_t *id_len);

/* EG_ENOTFOUND if absent; EG_ECORRUPT if it does not decode. */
eg_err eg_store_memory_get(eg_txn *t, const char *tenant, const char *memory_id,
                           eg_memory_rec **out);

/* Writes rec and everything derived from it. prev NULL: a new memory
 * (EG_EEXIST if the id is taken). Otherwise prev is the stored record
 * (user_id and create_time_us must not change): postings, vector and
 * counters are moved from prev's to rec's. vec (rec->dim floats) is the
 * new embedding, or NULL to keep the stored one (rec->dim 0 removes it).
 * The caller checks the user's dimension (eg_store_memory_counters) first;
 * the first embedding of a user fixes it. */
eg_err eg_store_memory_put(eg_txn *t, const char *tenant, const eg_memory_rec *rec,
                           const eg_memory_rec *prev, const float *vec);
/* Removes rec and its meta, vector and postings; updates the counters. */
eg_err eg_store_memory_purge(eg_txn *t, const char *tenant, const eg_memory_rec *rec);

/* The embedding of rec (rec->dim floats) copied into out. */
eg_err eg_store_memory_vector(eg_txn *t, const char *tenant, const eg_memory_rec *rec,
                              float *out);

/* The user's counters (zeros when the user has none). */
eg_err eg_store_memory_counters(eg_txn *t, const char *tenant, const char *user_id,
                                eg_memory_counters *out);

/* Called per memory in position order. vec is the raw embedding (meta->dim
 * float32 LE, unaligned, NULL when the memory has none or want_vectors was
 * 0), valid during the call. Return nonzero to stop. */
typedef int (*eg_memory_visit_fn)(void *arg, const eg_memory_pos *pos, const eg_memory_meta *meta,
                                  const uint8_t *vec);
/* Visits user_id's memories: ascending (oldest first) from after `after`,
 * or descending (newest first) from before `after` (NULL: from the end).
 * EG_EINVAL if `after` is malformed. Cost: O(log n + visited). */
eg_err eg_store_memories_scan(eg_txn *t, const char *tenant, const char *user_id,
                              const eg_memory_pos *after, int descending, int want_vectors,
                              eg_memory_visit_fn fn, void *arg);
/* The meta (and raw vector, when want_vector) of the memory at pos.
 * EG_ENOTFOUND if there is none. *vec may be NULL. */
eg_err eg_store_memory_meta_at(eg_txn *t, const char *tenant, const char *user_id,
                               const eg_memory_pos *pos, int want_vector, eg_memory_meta *meta,
                               const uint8_t **vec);

/* Called per memory in key order (tenant, memory_id): its key (the cursor
 * to resume after), tenant (a NUL-terminated copy, valid during the call)
 * and record (the callee's to free or keep). Return nonzero to stop. */
typedef int (*eg_memory_walk_fn)(void *arg, const uint8_t *key, size_t key_len,
                                 const char *tenant, eg_memory_rec *rec);
/* Visits at most max memories of every tenant in key order, strictly after
 * the key after[0..after_len) (after_len 0: from the first); *more is set
 * when memories remain past the last visited. For the background reindex.
 * Cost: O(log n + max). */
eg_err eg_store_memories_walk(eg_txn *t, const uint8_t *after, size_t after_len, size_t max,
                              eg_memory_walk_fn fn, void *arg, int *more);

/* Number of sessions user_id has. Cost: O(log n + sessions). */
eg_err eg_store_user_sessions_count(eg_txn *t, const char *tenant, const char *user_id,
                                    uint64_t *out);

/* Called per posting of a term: the memory's position. Return nonzero to stop. */
typedef int (*eg_posting_visit_fn)(void *arg, const eg_memory_pos *pos);
/* Visits every memory of user_id (any state) whose text has term. Cost:
 * O(log n + postings). */
eg_err eg_store_memory_postings(eg_txn *t, const char *tenant, const char *user_id,
                                uint64_t term, eg_posting_visit_fn fn, void *arg);

/* One bounded step of erasing user_id: deletes at most about `budget` keys
 * (sessions with their messages and retry records, memories with every
 * index entry, checkpoints with their index entries and pending writes,
 * the counters). *done is set once nothing of the user is
 * left; then *counts holds the totals of the whole erasure (the progress of
 * earlier steps is kept in memory_users, so a step rolled back with its txn
 * is simply redone). Call again in a new txn while *done is 0. */
eg_err eg_store_user_erase_step(eg_txn *t, const char *tenant, const char *user_id,
                                uint64_t budget, eg_erase_counts *counts, int *done);
/* *erasing: whether an erasure of user_id is under way in t (a step left
 * its progress record: begun, not done). */
eg_err eg_store_user_erasing(eg_txn *t, const char *tenant, const char *user_id, int *erasing);

#endif
