/*
 * storage: the key jobs' state (DB key_jobs, schema 7; replicated like
 * data). Part of the storage API (storage.h includes this header); same
 * transaction rules.
 *
 * Key layout:
 *   key_jobs  "blind_index" -> BlindIndexKeyRecord (the blind-index key id
 *             and its rotation, server/blind_key.h)
 *             "data_keys"   -> DataKeyRotationRecord (the data-key
 *             rotation, server/key_rotation.h)
 */
#ifndef EG_STORAGE_KEY_JOBS_H
#define EG_STORAGE_KEY_JOBS_H

#include "common/err.h"
#include <stddef.h>
#include <stdint.h>

#include "engram/storage/v1/records.pb-c.h"

typedef Engram__Storage__V1__BlindIndexKeyRecord eg_blind_key_rec;
typedef Engram__Storage__V1__DataKeyRotationRecord eg_dk_rotation_rec;
typedef struct eg_txn eg_txn;

/* The blind-index key row into *out (the caller's:
 * engram__storage__v1__blind_index_key_record__free_unpacked).
 * EG_ENOTFOUND when there is none (the keyring's lowest key id),
 * EG_ECORRUPT if it does not decode. */
eg_err eg_store_blind_key_get(eg_txn *t, eg_blind_key_rec **out);
/* Writes the row (logged). EG_EINVAL for a key_id of 0 (no key has it). */
eg_err eg_store_blind_key_put(eg_txn *t, const eg_blind_key_rec *rec);

/* The data-key rotation row into *out (the caller's:
 * engram__storage__v1__data_key_rotation_record__free_unpacked).
 * EG_ENOTFOUND when no rotation ever ran, EG_ECORRUPT if it does not
 * decode. */
eg_err eg_store_dk_rotation_get(eg_txn *t, eg_dk_rotation_rec **out);
/* Writes the row (logged). EG_EINVAL for a cursor longer than a key. */
eg_err eg_store_dk_rotation_put(eg_txn *t, const eg_dk_rotation_rec *rec);

/* ---- the records a blind-index rotation converts --------------------- */

/* The kinds of records holding blind tokens, in a rotation's walk order
 * (BlindIndexKeyRecord.kind). */
enum {
  EG_BLIND_MEMORIES = 0,
  EG_BLIND_MESSAGES,
  EG_BLIND_SESSIONS,
  EG_BLIND_CHECKPOINTS,
  EG_BLIND_ITEMS,
  EG_BLIND_KINDS
};

/* Where a walked record is: its DB key (the cursor to resume after, and
 * what eg_store_blind_get reads it back by), its tenant, and for
 * messages the session id, for store items the namespace (ns-enc) and
 * key; NUL-terminated copies valid during the call. */
typedef struct {
  const uint8_t *key;
  size_t key_len;
  const char *tenant;
  const char *session_id;
  const uint8_t *ns;
  size_t ns_len;
  const char *item_key;
} eg_blind_ref;
/* Called per record (rec: a MemoryRecord, MessageRecord, SessionRecord,
 * CheckpointRecord or StoreItemRecord by kind; the callee's to free).
 * Return nonzero to stop. */
typedef int (*eg_blind_walk_fn)(void *arg, const eg_blind_ref *ref, ProtobufCMessage *rec);
/* Visits at most max records of kind, every tenant's, in key order,
 * strictly after the key after[0..after_len) (0: from the first); *more
 * is set when records remain past the last visited. EG_EINVAL for an
 * unknown kind; EG_ECORRUPT for a key or record that does not parse.
 * Cost: O(log n + max). */
eg_err eg_store_blind_walk(eg_txn *t, unsigned kind, const uint8_t *after, size_t after_len,
                           size_t max, eg_blind_walk_fn fn, void *arg, int *more);
/* The record of kind at DB key key[0..key_len) (as walked) into *out (the
 * caller's: protobuf_c_message_free_unpacked). EG_ENOTFOUND when gone. */
eg_err eg_store_blind_get(eg_txn *t, unsigned kind, const uint8_t *key, size_t key_len,
                          ProtobufCMessage **out);
/* The entries of kind's DB (O(1): LMDB's count; store items counts their
 * expiry entries too): a rotation's total. */
eg_err eg_store_blind_count(eg_txn *t, unsigned kind, uint64_t *out);

#endif
