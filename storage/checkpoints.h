/*
 * storage: agent checkpoints (CheckpointService) and their pending writes.
 * Part of the storage API (storage.h includes this header); same
 * transaction rules.
 *
 * Key layout (u8len = one length byte; BE = big-endian; T = tenant;
 * D(x) = the first 16 bytes of SHA-256(x), so that the longest ids (128
 * bytes each: user, thread, namespace, checkpoint, task) still fit LMDB's
 * 511-byte keys; UK = u8len T | D(user_id), a user's prefix, and
 * TK = UK | D(thread_id), a thread's):
 *   checkpoints          TK | D(ns) | checkpoint_id          -> CheckpointRecord
 *   checkpoints_by_user  UK | 0x01 | checkpoint_id 0x00 | D(thread_id) | D(ns) -> ""
 *                        UK | 0x02 | D(thread_id) | checkpoint_id 0x00 | D(ns) -> ""
 *   checkpoint_writes    TK | D(ns) | D(checkpoint_id) | D(task_id) | idx ^ 0x80000000 u32 BE
 *                                                            -> CheckpointWriteRecord
 * checkpoint_id orders a namespace's checkpoints (LangGraph's ids are
 * time-ordered: byte order is age); the 0x00 after it in the index keeps
 * that order for ids of any length (ids hold no NUL: the wire check
 * refuses them). Index entries 0x01 list all of a user's checkpoints
 * newest first, 0x02 one thread's in every namespace. The records hold the
 * ids themselves (the keys only their digests). DeleteUser erases the UK
 * range of all three DBs, DeleteThread the TK range and the thread's index
 * entries.
 */
#ifndef EG_STORAGE_CHECKPOINTS_H
#define EG_STORAGE_CHECKPOINTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engram/storage/v1/checkpoint_records.pb-c.h"

typedef Engram__Storage__V1__CheckpointRecord eg_ckpt_rec;
typedef Engram__Storage__V1__CheckpointWriteRecord eg_ckpt_write_rec;
typedef struct eg_txn eg_txn;

#define EG_CKPT_DIGEST_LEN 16
/* A listing's position: the key of the last checkpoint it returned past
 * the scanned range's fixed prefix (at most checkpoint_id 0x00 | two
 * digests). */
#define EG_CKPT_POS_MAX (128 + 1 + 2 * EG_CKPT_DIGEST_LEN)

typedef struct {
  uint8_t buf[EG_CKPT_POS_MAX];
  size_t len;
} eg_ckpt_pos;

/* Frees a record this module returned (NULL is fine). */
void eg_ckpt_rec_free(eg_ckpt_rec *rec);
void eg_ckpt_write_rec_free(eg_ckpt_write_rec *rec);

/* Stores rec (its thread_id, checkpoint_ns, checkpoint_id name it; ns may
 * be "") for user_id, replacing one stored under the same ids, and its
 * two index entries. EG_EINVAL for an empty or too long id. */
eg_err eg_store_checkpoint_put(eg_txn *t, const char *tenant, const char *user_id,
                               const eg_ckpt_rec *rec);

/* The checkpoint checkpoint_id of (thread_id, ns), or the newest there when
 * checkpoint_id is NULL or "", into *out (set only on success; free with
 * eg_ckpt_rec_free). EG_ENOTFOUND if there is none; EG_ECORRUPT if it does
 * not decode or is not the one asked for. */
/* Whether key[0..key_len), a checkpoints key (as eg_store_blind_walk
 * hands it), is of user_id of tenant: the key holds D(user_id), not the
 * id. Cost: one SHA-256 of the id. */
int eg_store_checkpoint_key_user(const uint8_t *key, size_t key_len, const char *tenant,
                                 const char *user_id);

eg_err eg_store_checkpoint_get(eg_txn *t, const char *tenant, const char *user_id,
                               const char *thread_id, const char *ns, const char *checkpoint_id,
                               eg_ckpt_rec **out);

/* Called per checkpoint, newest first. rec is the visitor's (free it with
 * eg_ckpt_rec_free); pos is where a later scan resumes after it (valid
 * during the call). Return nonzero to stop. */
typedef int (*eg_ckpt_visit_fn)(void *arg, const eg_ckpt_pos *pos, eg_ckpt_rec *rec);

/* Visits user_id's checkpoints newest first: of (thread_id, ns); of
 * thread_id in every namespace (ns NULL); or of every thread (thread_id
 * NULL or "": ns is then ignored). Only ids below before_id (NULL or "":
 * no bound), and below `after` (a pos this scan gave with the same
 * arguments; NULL: from the newest). EG_EINVAL for a bad id or `after`;
 * EG_ECORRUPT for a record that does not decode or is not the one its key
 * or index entry names (ids, thread and namespace digests). Cost: O(log n
 * + visited). */
eg_err eg_store_checkpoints_scan(eg_txn *t, const char *tenant, const char *user_id,
                                 const char *thread_id, const char *ns, const char *before_id,
                                 const eg_ckpt_pos *after, eg_ckpt_visit_fn fn, void *arg);

/* Stores a pending write (rec->task_id, rec->idx name it) of checkpoint
 * (thread_id, ns, checkpoint_id). One of idx >= 0 already stored is kept
 * (*written 0: a retried write changes nothing); idx < 0 replaces it
 * (*written 1). */
eg_err eg_store_checkpoint_write_put(eg_txn *t, const char *tenant, const char *user_id,
                                     const char *thread_id, const char *ns,
                                     const char *checkpoint_id, const eg_ckpt_write_rec *rec,
                                     int *written);

/* Replaces the stored pending write rec->task_id, rec->idx of checkpoint
 * (thread_id, ns, checkpoint_id) with rec (the same write, its value
 * re-sealed: a data-key rotation). EG_ENOTFOUND if it is not stored. */
eg_err eg_store_checkpoint_write_replace(eg_txn *t, const char *tenant, const char *user_id,
                                         const char *thread_id, const char *ns,
                                         const char *checkpoint_id, const eg_ckpt_write_rec *rec);

/* The pending writes of checkpoint (thread_id, ns, checkpoint_id) in
 * (task_id, idx) order into *out, an array of *n records (free with
 * eg_ckpt_writes_free; NULL and 0 when there are none). At most max: more
 * is EG_ELIMIT. EG_ECORRUPT if one does not decode. */
eg_err eg_store_checkpoint_writes_get(eg_txn *t, const char *tenant, const char *user_id,
                                      const char *thread_id, const char *ns,
                                      const char *checkpoint_id, size_t max,
                                      eg_ckpt_write_rec ***out, size_t *n);
void eg_ckpt_writes_free(eg_ckpt_write_rec **w, size_t n);

/* How many pending writes checkpoint (thread_id, ns, checkpoint_id) holds
 * into *n, and their bytes as stored (values sealed, with their ids and
 * names: at least what a read returns of them) into *bytes. More than max
 * writes is EG_ELIMIT. Cost: O(log n + *n), no record decoded. */
eg_err eg_store_checkpoint_writes_size(eg_txn *t, const char *tenant, const char *user_id,
                                       const char *thread_id, const char *ns,
                                       const char *checkpoint_id, size_t max, size_t *n,
                                       uint64_t *bytes);

/* One bounded step of deleting thread_id of user_id (every namespace):
 * at most about `budget` keys. Adds what went to *checkpoints and
 * *writes; *done is set once nothing of the thread is left. Call again in
 * a new txn while *done is 0. Order: the checkpoints oldest first (each
 * with its index entries), then their pending writes; so what a step (or
 * a crash between steps) leaves is the thread's newest checkpoints, each
 * with all its writes. Records are not decoded: a damaged one goes too. */
eg_err eg_store_thread_delete_step(eg_txn *t, const char *tenant, const char *user_id,
                                   const char *thread_id, uint64_t budget, uint64_t *checkpoints,
                                   uint64_t *writes, int *done);

#endif
