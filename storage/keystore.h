/*
 * The key store's records: an LMDB env of its own (a directory, mode 0700,
 * data.mdb 0600), apart from the data store and never in its WAL. Records
 * and their replication index only; no cryptography here (the policy,
 * wrapping and the cache of opened keys are server/data_keys.c's).
 *
 * DBs:
 *   keys        u8 len | tenant | u8 len | user | generation u32 BE
 *               -> engram.storage.v1.KeyRecord (proto/.../keys.proto)
 *   by_version  version u64 BE -> the keys row changed at that version
 *   meta        "version" -> u64 BE, the highest version given out or applied
 * Every change takes the next version and moves the row's by_version entry
 * to it, so the rows changed after version V are by_version's keys > V.
 *
 * Thread safety: every function may be called from any thread; compaction
 * waits for the calls in progress and holds off new ones. Writes are
 * serialized by LMDB; callers that read then write (create if absent)
 * serialize among themselves. One process opens a key store at a time
 * (a lock file, as the data dir's).
 */
#ifndef EG_STORAGE_KEYSTORE_H
#define EG_STORAGE_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Longest tenant or user id (server/validate.c allows 128 bytes). */
#define EG_KEYSTORE_ID_MAX 128
/* Longest wrapped key a record may hold (crypto's is 77 bytes). */
#define EG_KEYSTORE_WRAPPED_MAX 128

typedef struct eg_keystore eg_keystore;

/* One record, decoded. A tombstone has wrapped_len 0. */
typedef struct {
  char tenant[EG_KEYSTORE_ID_MAX + 1];
  char user[EG_KEYSTORE_ID_MAX + 1];
  uint32_t gen;
  uint8_t wrapped[EG_KEYSTORE_WRAPPED_MAX];
  size_t wrapped_len;
  uint32_t master_key_id;
  int64_t create_time_us, erase_time_us;
  uint64_t version; /* set by eg_keystore_put / apply */
} eg_key_rec;

/* A change as replication carries it: a version and the encoded record. */
typedef struct {
  uint64_t version;
  const uint8_t *rec;
  size_t len;
} eg_key_change;

/* Opens (creating) the key store in dir: the dir is made 0700 (an
 * existing one of this user's tightened to it), data.mdb 0600, and
 * dir/LOCK is held (EG_EPRECOND naming the pid when another process
 * has it open). */
eg_err eg_keystore_open(const char *dir, eg_keystore **out, char *err, size_t errlen);
void eg_keystore_close(eg_keystore *ks);

/* The highest version given out or applied (0: none). */
uint64_t eg_keystore_version(eg_keystore *ks);

/* Fills rec with (tenant, user, gen)'s record: EG_ENOTFOUND when none.
 * EG_EINVAL for an id longer than EG_KEYSTORE_ID_MAX. */
eg_err eg_keystore_get(eg_keystore *ks, const char *tenant, const char *user, uint32_t gen,
                       eg_key_rec *rec);
/* The record of (tenant, user)'s highest generation: EG_ENOTFOUND when it
 * has none. */
eg_err eg_keystore_latest(eg_keystore *ks, const char *tenant, const char *user,
                          eg_key_rec *rec);

/* Stores recs[0..n) (new rows or replacing the same (tenant, user, gen)
 * rows) in one durable commit, each at the next version (set in it). */
eg_err eg_keystore_put(eg_keystore *ks, eg_key_rec *recs, size_t n);

/* Calls fn with each record of tenant's user (user NULL: every user of
 * tenant; tenant NULL: every record), in key order (by tenant length and
 * bytes, then user likewise, then generation), in one read txn: fn must
 * not call into ks. With after, starts past after's (tenant, user, gen)
 * row (a scan resumed in batches). fn returns nonzero to stop; that value
 * is returned, or 0 at the end, or an eg_err of the scan as a negative
 * number. */
typedef int (*eg_key_rec_fn)(void *arg, const eg_key_rec *rec);
int eg_keystore_scan(eg_keystore *ks, const char *tenant, const char *user,
                     const eg_key_rec *after, eg_key_rec_fn fn, void *arg);

/* Calls fn with each record changed after `since`, in version order, at
 * most max of them, as the encoded bytes replication carries; *last is
 * the version of the last one given (since when none). */
typedef eg_err (*eg_key_bytes_fn)(void *arg, uint64_t version, const uint8_t *rec, size_t len);
eg_err eg_keystore_changes(eg_keystore *ks, uint64_t since, size_t max, eg_key_bytes_fn fn,
                           void *arg, uint64_t *last);

/* Stores changes a primary sent (in its version order) in one durable
 * commit, each at its own version; the store's version becomes the
 * highest it has given out or applied (never lower: a new primary after a
 * failover may number below the old one). A row of this store that held
 * an applied version in by_version moves to a fresh version past it. A
 * tombstone is never replaced by a live record (a replay from 0 after a
 * failover does not undo an erasure). on_stored(arg, rec) is called for
 * each row written (may be NULL); *replaced counts the live rows whose
 * wrapped key a tombstone or a re-wrap replaced (the caller then
 * compacts).
 * EG_ECORRUPT for a record that does not decode or whose version differs
 * from its change's. */
eg_err eg_keystore_apply(eg_keystore *ks, const eg_key_change *ch, size_t n,
                         void (*on_stored)(void *arg, const eg_key_rec *rec), void *arg,
                         uint64_t *replaced);

/* Rewrites the env into a fresh file holding only its records, then puts
 * it in place of data.mdb (fsync, rename, fsync of the dir) and reopens:
 * no byte of a replaced or deleted record remains in the file, not in a
 * free page nor in the slack of a page (LMDB's own compacting copy keeps
 * pages, slack included, as they are). Other calls wait meanwhile. */
eg_err eg_keystore_compact(eg_keystore *ks, char *err, size_t errlen);

/* A compacted copy of the env (mdb_env_copyfd2), written to fd from its
 * current offset. */
eg_err eg_keystore_copy(eg_keystore *ks, int fd);

#endif
