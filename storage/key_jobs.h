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

#endif
