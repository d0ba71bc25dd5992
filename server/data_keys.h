/*
 * Envelope keys: every user of a tenant has its own data key (DEK), made on
 * the first write that seals a field of theirs, kept wrapped (sealed) by
 * the keyring's master key in a key store apart from the data (its own
 * LMDB env, --key-store, default DATA_DIR/keystore). Fields are sealed with
 * the user's data key (field token format 2, crypto/crypto.h). Records
 * without a user (store items) use the tenant's own data key, user "".
 *
 * Erasing a user (DeleteUser) or a tenant (DeleteTenant) destroys their
 * data keys: what remains is a tombstone per generation, and the key
 * store's file is compacted before the erase returns, so no copy of the
 * wrapped key stays in its free pages. Ciphertext sealed under a destroyed
 * key, wherever it lives (free pages of data.mdb, a backup, an archived WAL
 * segment, a replica's old disk), can then never be opened: EG_EERASED.
 *
 * Generations: a data-key rotation adds generation current+1, re-seals the
 * user's fields under it in the background (server/key_rotation.h), then
 * retires the old generation. A field token names its generation.
 *
 * Replication: the key store is not in the WAL (an archived segment must
 * never hold a wrapped key). Each change takes a new version; a
 * primary sends its replicas every record changed since the version they
 * hold, before the log records that follow (a key is committed before any
 * data sealed with it), so a replica holds a key whenever it holds data
 * sealed with it.
 *
 * Thread safety: every function may be called from any thread. Writes
 * (making a key, erasure, rotation, rewrap, apply) are serialized among
 * themselves; reads run in parallel (opened keys come from the cache).
 * A write that changes which generation is current or live (a rotation,
 * an erasure, a retire) keeps the user's keys out of the cache from before
 * its commit to after it (server/data_key_cache.h), so no reader gets the
 * old current after a rotation's commit, nor a destroyed key after an
 * erasure's. A key eg_data_key_current returned just before an erasure of
 * its user is the caller's to drop: this module does not order sealing
 * against erasure, and neither does DeleteUser's writer transaction (the
 * erasure runs in its prepare, on a worker, while writes sealed under the
 * key may be on their way to the writer). The order is the apply-time
 * check: each write's apply, on the writer, checks with eg_data_key_live
 * that every generation its prepare sealed under is still live before it
 * writes (server/convert.h, eg_field_sealed_live; ABORTED otherwise), and
 * seals on the writer use eg_data_key_current_existing (never making a
 * key). A write that passed the check is ahead of the erasure's applies on
 * the writer, which then erase its record.
 */
#ifndef EG_SERVER_DATA_KEYS_H
#define EG_SERVER_DATA_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"
#include "server/arena.h"
#include "storage/keystore.h"

/* The user of records that have none: the tenant's own data key. */
#define EG_DATA_KEY_TENANT_USER ""

typedef struct eg_data_keys eg_data_keys;

/* Opens (creating) the key store in dir (storage/keystore.h: dir 0700,
 * file 0600, locked: EG_EPRECOND when another process has it); cache_max
 * opened keys are kept in sodium_malloc'd memory. */
eg_err eg_data_keys_open(const char *dir, int64_t cache_max, eg_data_keys **out, char *err,
                         size_t errlen);
void eg_data_keys_close(eg_data_keys *dk);

/* The data key new tokens of (tenant, user) are sealed with: its
 * generation, and its bytes copied into key (the caller wipes them).
 * Creates it, wrapped under kr's primary and durable, when the user has
 * none (or only erased ones: a new generation after the tombstones).
 * EG_EINVAL for an id longer than 128 bytes; EG_ECORRUPT (logged) when the
 * stored key does not open under kr. */
eg_err eg_data_key_current(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                           const char *user, uint32_t *gen, uint8_t key[EG_KEY_LEN]);

/* The same, but never creates: EG_EERASED when (tenant, user)'s latest
 * generation is a tombstone (the user was erased), EG_ENOTFOUND when the
 * user has no data key. For the rotation and for seals on the writer,
 * which must not bring an erased user back a key. */
eg_err eg_data_key_current_existing(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                                    const char *user, uint32_t *gen, uint8_t key[EG_KEY_LEN]);

/* Whether generation gen of (tenant, user) may still be sealed under:
 * EG_OK when the store holds it live (a cache hit in the normal case),
 * EG_EERASED when it was destroyed, EG_ENOTFOUND when the store never
 * held it; a failed read of the store as itself. */
eg_err eg_data_key_live(eg_data_keys *dk, const char *tenant, const char *user, uint32_t gen);

/* The data key of one generation: EG_EERASED when it was destroyed,
 * EG_ECORRUPT when the store does not hold it or its master key is not in
 * kr (with why in err). */
eg_err eg_data_key_get(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                       const char *user, uint32_t gen, uint8_t key[EG_KEY_LEN], char *err,
                       size_t errlen);

/* Destroys every data key of (tenant, user), or of every user of tenant
 * (the tenant's own key too), leaving tombstones; durable and compacted
 * out of the file before it returns. *destroyed: keys destroyed now. */
eg_err eg_data_keys_erase_user(eg_data_keys *dk, const char *tenant, const char *user,
                               uint64_t *destroyed);
eg_err eg_data_keys_erase_tenant(eg_data_keys *dk, const char *tenant, uint64_t *destroyed);

/* An erasure under way: from before an erasure destroys the keys to after
 * its last erase step committed (DeleteUser and DeleteTenant begin it in
 * prepare, before eg_data_keys_erase_*, and end it when their call is
 * freed, after its answer), eg_data_keys_rotate gives no first key to its
 * user (user NULL: to any user of tenant) while it holds none: EG_EERASED.
 * A user holding a live key is rotated as ever (its erasure destroys the
 * new key too, under the same lock). Why: a user holding
 * format 1 tokens only has no key for the erasure to destroy, and until
 * its first erase step commits nothing in the data store says it is
 * being erased; a rotation's first phase (server/key_adopt.h) making it
 * a key in that window would leave a live key with nothing under it. Once
 * the erasure ended, its records are gone as any later read txn sees.
 * Held in memory only: after a restart the erase steps' own progress
 * marks the user (eg_store_user_holds). EG_EINVAL for an id longer than
 * 128 bytes; EG_ENOMEM. */
typedef struct eg_dk_erasure eg_dk_erasure;
eg_err eg_data_keys_erasure_begin(eg_data_keys *dk, const char *tenant, const char *user,
                                  eg_dk_erasure **out);
/* Ends the erasure begun as `erasure` (an eg_dk_erasure *; the arena-defer
 * shape) and frees it. NULL is fine. */
void eg_data_keys_erasure_end(void *erasure);
/* eg_data_keys_erasure_begin, ended when arena a is freed (a call's: the
 * services' shape). Errors as eg_data_keys_erasure_begin (EG_ENOMEM also
 * when the end cannot be deferred: nothing is left begun). */
eg_err eg_data_keys_erasure_hold(eg_data_keys *dk, eg_arena *a, const char *tenant,
                                 const char *user);

/* (tenant, user)'s latest generation as the key store holds it now (not
 * the cache: what a rotation re-seals under and retires below): EG_OK
 * when live, EG_EERASED (*gen set) when a tombstone, EG_ENOTFOUND when the
 * user has no key. */
eg_err eg_data_key_latest(eg_data_keys *dk, const char *tenant, const char *user, uint32_t *gen);

/* Rotation: makes generation current+1 (wrapped under kr's primary) the
 * current one of (tenant, user); *gen is it. Older generations stay until
 * retired. Never makes a key for an erased user: EG_EERASED when the
 * latest is a tombstone, or when the user holds no key and an erasure of
 * it is under way (eg_data_keys_erasure_begin). A user without any key gets generation 1 (one
 * with only format 1 tokens, from before envelope keys, rotated by name). */
eg_err eg_data_keys_rotate(eg_data_keys *dk, const eg_keyring *kr, const char *tenant,
                           const char *user, uint32_t *gen);
/* Destroys every live generation of (tenant, user) below current (their
 * tokens are all re-sealed under current), compacted out of the file as an
 * erasure; *retired counts them. Refuses unless current is the user's live
 * latest generation in the store: EG_EABORTED when another is (a rotation
 * since: tokens may be under a generation below current), EG_EERASED when
 * the user was erased. */
eg_err eg_data_keys_retire_before(eg_data_keys *dk, const char *tenant, const char *user,
                                  uint32_t current, uint64_t *retired);

/* Calls fn for each (tenant, user) holding a live data key, in key order,
 * with its current generation and its oldest live one; fn returns nonzero
 * to stop (that value is returned; a failed read of the store returns its
 * eg_err negated). fn runs with no txn open: it may rotate or retire. */
typedef int (*eg_data_key_user_fn)(void *arg, const char *tenant, const char *user,
                                   uint32_t current_gen, uint32_t oldest_gen);
int eg_data_keys_each_user(eg_data_keys *dk, eg_data_key_user_fn fn, void *arg);
/* As eg_data_keys_each_user, and each user whose latest generation is
 * destroyed (erased: a tombstone) too, with current_gen 0 (oldest_gen its
 * oldest live one, 0 when none is). */
int eg_data_keys_each_known_user(eg_data_keys *dk, eg_data_key_user_fn fn, void *arg);

/* Re-wraps up to max (0: all) data keys not under kr's primary master key
 * under it, in transactions of at most 1000 keys (other writes wait for
 * one of them at most, not the whole rewrap), then compacts the file (the
 * old wrappings leave it). *done: keys re-wrapped; *remaining: keys still
 * under another master key. EG_EPRECOND (logged, naming the key) when a
 * key's master key is not in kr; EG_ELIMIT when the keys are under more
 * than EG_DATA_KEYS_MASTERS_MAX master keys (remaining not counted). */
eg_err eg_data_keys_rewrap(eg_data_keys *dk, const eg_keyring *kr, uint64_t max, uint64_t *done,
                           uint64_t *remaining);

/* Master key ids a status lists at most: the keyring's, and as many more
 * no longer in it that still wrap data keys. */
#define EG_DATA_KEYS_MASTERS_MAX (2 * EG_KEYRING_KEYS_MAX)

/* Counts per master key id (ids ascending, at most cap of them;
 * n_masters counts them all). */
typedef struct {
  uint32_t master_key_id;
  uint64_t data_keys;
} eg_master_key_use;
typedef struct {
  uint64_t data_keys;    /* live */
  uint64_t erased_users; /* tombstoned users */
  size_t n_masters;
} eg_data_keys_stats;
eg_err eg_data_keys_status(eg_data_keys *dk, eg_data_keys_stats *st, eg_master_key_use *uses,
                           size_t cap);
/* eg_data_keys_status with cap EG_DATA_KEYS_MASTERS_MAX, for the callers
 * that need every id listed: EG_ELIMIT (st->n_masters set) past it. */
eg_err eg_data_keys_status_all(eg_data_keys *dk, eg_data_keys_stats *st,
                               eg_master_key_use uses[EG_DATA_KEYS_MASTERS_MAX]);

/* ---- replication and backup ---- */
/* The highest version this store gave out or applied (0: none). */
uint64_t eg_data_keys_version(eg_data_keys *dk);
/* Calls fn with each record changed after `since`, in version order, at
 * most max of them; *last is the version of the last one given. A record
 * is opaque bytes (a storage KeyRecord: a wrapped key or a tombstone). */
typedef eg_err (*eg_data_key_rec_fn)(void *arg, uint64_t version, const uint8_t *rec,
                                     size_t len);
eg_err eg_data_keys_changes(eg_data_keys *dk, uint64_t since, size_t max, eg_data_key_rec_fn fn,
                            void *arg, uint64_t *last);
/* A replica stores a record its primary sent (durably), at its version.
 * A tombstone never turns live again (a replay from 0 after a failover
 * keeps erasures); a record that destroyed or re-wrapped a live key
 * compacts the file before this returns, as an erasure or a rewrap on the
 * primary does. The store's version never goes down (storage/keystore.h). */
eg_err eg_data_keys_apply(eg_data_keys *dk, uint64_t version, const uint8_t *rec, size_t len);
/* The same for the changes of one StreamResponse (in version order), in
 * one commit and at most one compaction. */
eg_err eg_data_keys_apply_batch(eg_data_keys *dk, const eg_key_change *ch, size_t n);
/* A compacted copy of the whole key store, written to fd from its start. */
eg_err eg_data_keys_copy(eg_data_keys *dk, int fd);

#endif
