/* The LMDB env: open/close, named DBs, schema version, last LSN, map size. */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <stddef.h>

#include "common/log.h"
#include "storage/internal.h"

#define EG_STORE_DEFAULT_MAP_SIZE ((size_t)1 << 30)
#define EG_STORE_DEFAULT_READERS 126

/* ---- meta ------------------------------------------------------------------- */

static MDB_val eg_meta_key(const char *name) { return (MDB_val){strlen(name), (void *)name}; }

eg_err eg_store__meta_get_u64(MDB_txn *txn, MDB_dbi meta, const char *name, uint64_t *out) {
  MDB_val k = eg_meta_key(name), v;
  int rc = mdb_get(txn, meta, &k, &v);
  if (rc == MDB_NOTFOUND) {
    *out = 0;
    return EG_OK;
  }
  if (rc) return eg_store__err(rc);
  if (v.mv_size != 8) return EG_ECORRUPT;
  *out = eg_be64_get(v.mv_data);
  return EG_OK;
}

eg_err eg_store__meta_put_u64(MDB_txn *txn, MDB_dbi meta, const char *name, uint64_t val) {
  uint8_t b[8];
  eg_be64_put(b, val);
  MDB_val k = eg_meta_key(name), v = {sizeof b, b};
  return eg_store__err(mdb_put(txn, meta, &k, &v, 0));
}

eg_err eg_store__meta_get_version(MDB_txn *txn, MDB_dbi meta, uint32_t *out) {
  MDB_val k = eg_meta_key(EG_META_SCHEMA_VERSION), v;
  int rc = mdb_get(txn, meta, &k, &v);
  if (rc == MDB_NOTFOUND) {
    *out = 0;
    return EG_OK;
  }
  if (rc) return eg_store__err(rc);
  if (v.mv_size != 4) return EG_ECORRUPT;
  *out = eg_be32_get(v.mv_data);
  return EG_OK;
}

/* ---- map size ------------------------------------------------------------- */

static void eg_store_cache_map_size(eg_store *s) {
  MDB_envinfo info;
  if (mdb_env_info(s->env, &info) == 0)
    atomic_store_explicit(&s->map_size, info.me_mapsize, memory_order_release);
}

/* Longest a map change waits for readers to leave. A long reader (a
 * snapshot copy, a checksum) must not stall every other reader behind a
 * waiting writer: past this the grow gives up (EG_EMAPBUSY, which says
 * why) and the caller fails its batch as retryable. */
#define EG_MAP_LOCK_WAIT_S 2

/* Sets the map size with no read txn of this process live. */
static eg_err eg_store_set_map_size(eg_store *s, size_t size) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += EG_MAP_LOCK_WAIT_S;
  int lrc = pthread_rwlock_timedwrlock(&s->map_lock, &until);
  if (lrc == ETIMEDOUT) return EG_EMAPBUSY;
  if (lrc != 0) return EG_EIO;
  int rc = mdb_env_set_mapsize(s->env, size);
  if (!rc) eg_store_cache_map_size(s);
  pthread_rwlock_unlock(&s->map_lock);
  /* EINVAL: a write txn of this process is open; the caller may retry. */
  return rc == EINVAL ? EG_EUNAVAIL : eg_store__err(rc);
}

eg_err eg_store__adopt_map_size(eg_store *s) { return eg_store_set_map_size(s, 0); }

eg_err eg_store_grow(eg_store *s) {
  size_t cur = eg_store_map_size(s);
  if (cur > SIZE_MAX / 2) return EG_EMAPFULL;
  return eg_store_set_map_size(s, cur * 2);
}

size_t eg_store_map_size(const eg_store *s) {
  return atomic_load_explicit(&s->map_size, memory_order_acquire);
}

uint64_t eg_store_index_base_lsn(const eg_store *s) { return s->index_base_lsn; }

uint64_t eg_store_last_lsn(const eg_store *s) {
  return atomic_load_explicit(&s->last_lsn, memory_order_acquire);
}

/* ---- open / close --------------------------------------------------------- */

static eg_err eg_store_init_lock(eg_store *s) {
  pthread_rwlockattr_t attr;
  if (pthread_rwlockattr_init(&attr) != 0) return EG_ENOMEM;
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  int rc = pthread_rwlock_init(&s->map_lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  if (rc) return EG_ENOMEM;
  s->map_lock_ok = 1;
  return EG_OK;
}

static eg_err eg_store_open_env(eg_store *s, const char *dir, const eg_store_opts *opts,
                                char *err, size_t errlen) {
  unsigned readers = opts && opts->max_readers ? opts->max_readers : EG_STORE_DEFAULT_READERS;
  int dead = 0;
  int rc = mdb_env_create(&s->env);
  if (!rc) rc = mdb_env_set_maxdbs(s->env, EG_STORE_MAX_DBS);
  if (!rc) rc = mdb_env_set_maxreaders(s->env, readers);
  /* MDB_NOTLS: a reader is a per-worker object, not per-thread state.
   * Never MDB_NOSYNC: data pages are flushed before each meta page is
   * written, so a power cut leaves the last meta that reached the disk
   * pointing at pages that did. MDB_NOMETASYNC only once open (the open's
   * own commit, migrations included, is durable at return) and only with
   * defer_meta_sync: eg_store_open_dbs_durably. No MDB_WRITEMAP: nested txns
   * need it off. */
  if (!rc) rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600);
  /* Slots left by readers of a process that died would pin old pages. */
  if (!rc) rc = mdb_reader_check(s->env, &dead);
  if (rc) snprintf(err, errlen, "%s/data.mdb: %s", dir, mdb_strerror(rc));
  /* MDB_INVALID, MDB_VERSION_MISMATCH: not an LMDB file this build reads. */
  return rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ? EG_ECORRUPT : eg_store__err(rc);
}

/* The larger of the requested size and the size the file already has, so
 * a reopen never undoes growth. No txn is open yet: no lock needed. */
static eg_err eg_store_init_map_size(eg_store *s, const eg_store_opts *opts, char *err,
                                     size_t errlen) {
  size_t want = opts && opts->map_size ? opts->map_size : EG_STORE_DEFAULT_MAP_SIZE;
  MDB_envinfo info;
  int rc = mdb_env_info(s->env, &info);
  if (!rc && want > info.me_mapsize) rc = mdb_env_set_mapsize(s->env, want);
  if (rc) snprintf(err, errlen, "map size: %s", mdb_strerror(rc));
  eg_store_cache_map_size(s);
  return eg_store__err(rc);
}

static eg_err eg_store_open_dbi(MDB_txn *txn, const char *name, unsigned flags, MDB_dbi *dbi,
                                const char *what, char *err, size_t errlen) {
  int rc = mdb_dbi_open(txn, name, flags, dbi);
  if (rc) snprintf(err, errlen, "%sopen db %s: %s", what, name, mdb_strerror(rc));
  return rc == MDB_NOTFOUND ? EG_ECORRUPT : eg_store__err(rc);
}

eg_err eg_store__open_dbs(MDB_txn *txn, eg_store *s, const struct eg_db_slot *slots, size_t n,
                          const char *what, char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    eg_err e = eg_store_open_dbi(txn, slots[i].name, 0, (MDB_dbi *)((char *)s + slots[i].off),
                                 what, err, errlen);
    if (e) return e;
  }
  return EG_OK;
}

/* Every data DB: opened at start into its eg_store field, and replicated
 * through the WAL under its name. A DB a migration adds gets a row here. */
const struct eg_db_slot eg_store__data_db_table[] = {
    {EG_DB_SESSIONS, offsetof(eg_store, sessions)},
    {EG_DB_SESSIONS_BY_USER, offsetof(eg_store, sessions_by_user)},
    {EG_DB_MESSAGES, offsetof(eg_store, messages)},
    {EG_DB_IDEMPOTENCY, offsetof(eg_store, idempotency)},
    {EG_DB_MEMORIES, offsetof(eg_store, memories)},
    {EG_DB_MEMORIES_BY_USER, offsetof(eg_store, memories_by_user)},
    {EG_DB_MEMORY_VECTORS, offsetof(eg_store, memory_vectors)},
    {EG_DB_MEMORY_TERMS, offsetof(eg_store, memory_terms)},
    {EG_DB_MEMORY_USERS, offsetof(eg_store, memory_users)},
    {EG_DB_SESSIONS_BY_ACTIVITY, offsetof(eg_store, sessions_by_activity)},
    {EG_DB_SWEEP_DUE, offsetof(eg_store, sweep_due)},
    {EG_DB_RETENTION, offsetof(eg_store, retention)},
    {EG_DB_SESSION_TERMS, offsetof(eg_store, session_terms)},
    {EG_DB_CHECKPOINTS, offsetof(eg_store, checkpoints)},
    {EG_DB_CHECKPOINTS_BY_USER, offsetof(eg_store, checkpoints_by_user)},
    {EG_DB_CHECKPOINT_WRITES, offsetof(eg_store, checkpoint_writes)},
    {EG_DB_STORE_ITEMS, offsetof(eg_store, store_items)},
    {EG_DB_STORE_NAMESPACES, offsetof(eg_store, store_namespaces)},
    {EG_DB_MESSAGE_TERMS, offsetof(eg_store, message_terms)},
    {EG_DB_MESSAGE_INDEX_STATS, offsetof(eg_store, message_index_stats)},
    {EG_DB_INDEX_STATE, offsetof(eg_store, index_state)},
    {EG_DB_TENANT_LIMITS, offsetof(eg_store, tenant_limits)},
    {EG_DB_TENANT_USAGE, offsetof(eg_store, tenant_usage)},
    {EG_DB_KEY_JOBS, offsetof(eg_store, key_jobs)},
};

const size_t eg_store__n_data_dbs =
    sizeof eg_store__data_db_table / sizeof eg_store__data_db_table[0];

static eg_err eg_store_open_data_dbs(eg_store *s, MDB_txn *txn, char *err, size_t errlen) {
  _Static_assert(sizeof eg_store__data_db_table / sizeof eg_store__data_db_table[0] <=
                     EG_STORE_MAX_DBS - 2,
                 "room for meta and wal");
  const size_t n = eg_store__n_data_dbs;
  eg_err e = eg_store__open_dbs(txn, s, eg_store__data_db_table, n, "", err, errlen);
  if (e) return e;
  for (size_t i = 0; i < n; i++)
    s->data_dbs[i] = (struct eg_data_db){eg_store__data_db_table[i].name,
                                         *(MDB_dbi *)((char *)s + eg_store__data_db_table[i].off),
                                         eg_store__usage_counted(eg_store__data_db_table[i].name)};
  s->n_data_dbs = n;
  return eg_store_open_dbi(txn, EG_DB_WAL, 0, &s->wal, "", err, errlen);
}

const char *eg_store__db_name(const eg_store *s, MDB_dbi dbi) {
  for (size_t i = 0; i < s->n_data_dbs; i++)
    if (s->data_dbs[i].dbi == dbi) return s->data_dbs[i].name;
  return NULL;
}

eg_err eg_store__db_by_name(const eg_store *s, const char *name, MDB_dbi *dbi) {
  for (size_t i = 0; i < s->n_data_dbs; i++)
    if (strcmp(s->data_dbs[i].name, name) == 0) return *dbi = s->data_dbs[i].dbi, EG_OK;
  return EG_ECORRUPT;
}

/* In one write txn: checks the store id and the schema version, migrates,
 * opens every DB, loads last_lsn; marker gets a store id to write beside
 * the data once it commits ("" for none). Handles opened in a txn become usable by all once it
 * commits. */
static eg_err eg_store_open_dbs(eg_store *s, char *marker, size_t cap, char *err,
                                size_t errlen) {
  MDB_txn *txn = NULL;
  uint32_t version = 0;
  uint64_t lsn = 0, epoch = 0, floor = 0;
  eg_err e = eg_store__err(mdb_txn_begin(s->env, NULL, 0, &txn));
  if (e) goto fail;
  e = eg_store_open_dbi(txn, EG_DB_META, MDB_CREATE, &s->meta, "", err, errlen);
  if (e) goto fail;
  /* Before any migration writes: a replaced data file is refused as is. */
  e = eg_store__check_store_id(s, txn, marker, cap, err, errlen);
  if (!e) e = eg_store__meta_get_version(txn, s->meta, &version);
  if (e) goto fail;
  if (version > EG_STORE_SCHEMA_VERSION) {
    snprintf(err, errlen, "schema version %u is newer than this build's %u", version,
             EG_STORE_SCHEMA_VERSION);
    e = EG_EPRECOND;
    goto fail;
  }
  e = eg_store__migrate(txn, s->meta, &version, err, errlen);
  if (!e) e = eg_store_open_data_dbs(s, txn, err, errlen);
  if (!e) e = eg_store__meta_get_u64(txn, s->meta, EG_META_LAST_LSN, &lsn);
  if (!e) e = eg_store__meta_get_u64(txn, s->meta, EG_META_EPOCH, &epoch);
  if (!e) e = eg_store__meta_get_u64(txn, s->meta, EG_META_ERASE_FLOOR, &floor);
  if (!e) e = eg_store__meta_get_u64(txn, s->meta, EG_META_INDEX_BASE_LSN, &s->index_base_lsn);
  if (e) goto fail;
  e = eg_store__err(mdb_txn_commit(txn));
  txn = NULL;
  if (e) goto fail;
  atomic_store(&s->last_lsn, lsn);
  s->committed_lsn = lsn;
  /* A store that never had a primary starts in epoch 1. */
  atomic_store(&s->epoch, epoch ? epoch : 1);
  atomic_store(&s->erase_floor, floor);
  return EG_OK;
fail:
  if (txn) mdb_txn_abort(txn);
  if (!err[0]) snprintf(err, errlen, "open dbs: %s", eg_err_msg(e));
  return e;
}

/* How often an open doubles the map for a migration that filled it: 8
 * doublings take the default 1 GiB map to 256 GiB. */
#define EG_STORE_OPEN_GROWS_MAX 8

/* eg_store_open_dbs, growing the map when a migration fills it: the
 * migrations run in the open txn, which cannot grow the map itself (and a
 * store near its map size may need room for what migration 4 adds). No
 * txn is open between tries. */
static eg_err eg_store_open_dbs_growing(eg_store *s, char *marker, size_t cap, char *err,
                                        size_t errlen) {
  for (int grows = 0;; grows++) {
    eg_err e = eg_store_open_dbs(s, marker, cap, err, errlen);
    size_t cur = eg_store_map_size(s);
    if (e != EG_EMAPFULL || grows == EG_STORE_OPEN_GROWS_MAX || cur > SIZE_MAX / 2) return e;
    eg_log(EG_LOG_INFO, "%s: opening needs more than the %zu-byte map (%s): doubling it",
           s->dir, cur, err);
    int rc = mdb_env_set_mapsize(s->env, cur * 2);
    if (rc) {
      snprintf(err, errlen, "map size: %s", mdb_strerror(rc));
      return eg_store__err(rc);
    }
    eg_store_cache_map_size(s);
    err[0] = '\0';
  }
}

/* Opens the DBs with both flushes per commit, then (defer_meta_sync)
 * lets later commits skip the meta page's: the store id and migrations
 * are durable before eg_store_open returns. */
static eg_err eg_store_open_dbs_durably(eg_store *s, const eg_store_opts *opts, char *marker,
                                        size_t cap, char *err, size_t errlen) {
  eg_err e = eg_store_open_dbs_growing(s, marker, cap, err, errlen);
  if (e || !opts || !opts->defer_meta_sync) return e;
  int rc = mdb_env_set_flags(s->env, MDB_NOMETASYNC, 1);
  if (rc) snprintf(err, errlen, "meta sync: %s", mdb_strerror(rc));
  s->defer_meta_sync = 1;
  return eg_store__err(rc);
}

eg_err eg_store_open(const char *dir, const eg_store_opts *opts, eg_store **out, char *err,
                     size_t errlen) {
  char scratch[256], marker[64] = "";
  eg_err e;
  if (!err || !errlen) {
    err = scratch;
    errlen = sizeof scratch;
  }
  err[0] = '\0';
  eg_store *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return EG_ENOMEM;
  }
  e = eg_store__make_dir(dir, err, errlen);
  if (!e) e = eg_store__check_data_file(dir, opts ? opts->keyring : NULL, err, errlen);
  if (!e && !(s->dir = strdup(dir))) e = EG_ENOMEM;
  if (!e) e = eg_store__lsn_init(s);
  if (!e) e = eg_store_init_lock(s);
  if (!e) e = eg_store_open_env(s, dir, opts, err, errlen);
  /* Before the first txn reads a page of the file. */
  if (!e) e = eg_store__check_data_size(s, err, errlen);
  if (!e) e = eg_store_init_map_size(s, opts, err, errlen);
  if (!e) e = eg_store_open_dbs_durably(s, opts, marker, sizeof marker, err, errlen);
  if (!e && marker[0]) e = eg_store__write_store_id(dir, marker, err, errlen);
  if (e) goto fail;
  *out = s;
  return EG_OK;
fail:
  if (!err[0]) snprintf(err, errlen, "%s", eg_err_msg(e));
  eg_store_close(s);
  return e;
}

void eg_store_close(eg_store *s) {
  if (!s) return;
  /* A clean stop leaves the last commit durable too (its writes were
   * answered already, or failed, by the writer: eg_store_sync). */
  if (s->env && s->defer_meta_sync) eg_store_sync(s);
  /* Closing the env also closes the DB handles. */
  if (s->env) mdb_env_close(s->env);
  if (s->map_lock_ok) pthread_rwlock_destroy(&s->map_lock);
  eg_store__lsn_destroy(s);
  free(s->dir);
  free(s);
}
