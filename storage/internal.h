/*
 * Private to storage/: the store and txn structs and the helpers the
 * storage files share. Nothing outside storage/ includes this.
 */
#ifndef EG_STORAGE_INTERNAL_H
#define EG_STORAGE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "storage/keys.h"
#include "storage/storage.h"

/* Named DBs (created by migration 1, see migrate.c). */
#define EG_DB_META "meta"
#define EG_DB_SESSIONS "sessions"
#define EG_DB_SESSIONS_BY_USER "sessions_by_user"
#define EG_DB_MESSAGES "messages"
#define EG_DB_IDEMPOTENCY "idempotency"
#define EG_DB_WAL "wal"
/* Memories (migration 3, see storage/memories.h). */
#define EG_DB_MEMORIES "memories"
#define EG_DB_MEMORIES_BY_USER "memories_by_user"
#define EG_DB_MEMORY_VECTORS "memory_vectors"
#define EG_DB_MEMORY_TERMS "memory_terms"
#define EG_DB_MEMORY_USERS "memory_users"
/* Lifecycle indexes and policy (migration 4, see storage.h). */
#define EG_DB_SESSIONS_BY_ACTIVITY "sessions_by_activity"
#define EG_DB_SWEEP_DUE "sweep_due"
#define EG_DB_RETENTION "retention"
#define EG_DB_SESSION_TERMS "session_terms"
/* Agent state (migration 5): checkpoints (storage/checkpoints.h) and the
 * key-value store (storage/store_items.h). */
#define EG_DB_CHECKPOINTS "checkpoints"
#define EG_DB_CHECKPOINTS_BY_USER "checkpoints_by_user"
#define EG_DB_CHECKPOINT_WRITES "checkpoint_writes"
#define EG_DB_STORE_ITEMS "store_items"
#define EG_DB_STORE_NAMESPACES "store_namespaces"
/* Keyword search (migration 6): the message index and the indexes' state
 * (storage/message_index.h). */
#define EG_DB_MESSAGE_TERMS "message_terms"
#define EG_DB_MESSAGE_INDEX_STATS "message_index_stats"
#define EG_DB_INDEX_STATE "index_state"
/* Security (migration 7): per-tenant limit overrides and storage usage
 * (server/limits.h), and the key jobs' state (data-key and blind-index
 * rotation, server/key_rotation.h). */
#define EG_DB_TENANT_LIMITS "tenant_limits"
#define EG_DB_TENANT_USAGE "tenant_usage"
#define EG_DB_KEY_JOBS "key_jobs"
/* Room for the DBs later versions add (26 are in use at version 7). */
#define EG_STORE_MAX_DBS 32
/* The dbi of a named DB is below this: LMDB's own two (free list, main)
 * come first (mdb_env_set_maxdbs counts named DBs only). */
#define EG_TXN_CURSORS (EG_STORE_MAX_DBS + 2)

/* meta keys */
#define EG_META_SCHEMA_VERSION "schema_version"
#define EG_META_LAST_LSN "last_lsn"
#define EG_META_EPOCH "epoch"
#define EG_META_ERASE_FLOOR "erase_floor"
#define EG_META_INDEX_BASE_LSN "index_base_lsn"

/* A DB by name and the eg_store field its handle goes in. */
struct eg_db_slot {
  const char *name;
  size_t off;
};

/* A data DB: replicated through the WAL, named in its ops. */
struct eg_data_db {
  const char *name;
  MDB_dbi dbi;
  int counted; /* its keys count toward their tenant's usage (eg_store__usage_counted) */
};

struct eg_store {
  MDB_env *env;
  MDB_dbi meta, wal, sessions, sessions_by_user, messages, idempotency;
  MDB_dbi memories, memories_by_user, memory_vectors, memory_terms, memory_users;
  MDB_dbi sessions_by_activity, sweep_due, retention, session_terms;
  MDB_dbi checkpoints, checkpoints_by_user, checkpoint_writes, store_items, store_namespaces;
  MDB_dbi message_terms, message_index_stats, index_state;
  MDB_dbi tenant_limits, tenant_usage, key_jobs;
  /* Bumped after every commit that changed tenant_limits (a local write or
   * an applied log record): eg_store_tenant_limits_gen. */
  _Atomic uint64_t limits_gen;
  /* Every data DB by name (filled at open from eg_store__data_db_table). */
  struct eg_data_db data_dbs[EG_STORE_MAX_DBS];
  size_t n_data_dbs;
  /* Read side: held by each reader from reader_begin to reader_end.
   * Write side: taken to change the map size, because
   * mdb_env_set_mapsize unmaps the file under any live read txn of this
   * process. Writer-preferring, so a steady stream of readers cannot
   * starve growth. */
  pthread_rwlock_t map_lock;
  int map_lock_ok; /* map_lock was initialised (for close after a failed open) */
  /* Caches for any thread: last_lsn is stored by the writer after each
   * commit; map_size after each size change. */
  _Atomic uint64_t last_lsn;
  _Atomic size_t map_size;
  _Atomic uint64_t epoch; /* cached like last_lsn */
  _Atomic uint64_t erase_floor; /* LSN of the last erasure: the log drops what is below */
  uint64_t index_base_lsn;      /* set at open, then read-only (eg_store_index_base_lsn) */
  /* Broadcast after every commit, for eg_store_wait_lsn. */
  pthread_mutex_t lsn_mu;
  pthread_cond_t lsn_cv; /* CLOCK_MONOTONIC */
  uint64_t lsn_wakes;    /* guarded by lsn_mu: bumped by eg_store_wake_waiters */
  int lsn_cv_ok;
  char *dir; /* the data dir, for snapshots */
  /* Set by the commit that met a full disk, cleared by the next one that
   * got through: one log line per episode (eg_store__disk_episode). */
  atomic_int disk_full;
  atomic_int broken; /* LMDB panicked: see eg_store_broken */
  /* committed_lsn: the last commit (writer thread only). With
   * eg_store_opts.defer_meta_sync, last_lsn trails it until a flush. */
  int defer_meta_sync;
  uint64_t committed_lsn;
  atomic_uint_fast64_t flushes; /* eg_store_flushes */
};

/* The ops of a write txn, already encoded as WalRecord field 4 entries, so
 * a nested txn's buffer appends to its parent's as it is. */
typedef struct {
  uint8_t *buf;
  size_t len, cap;
} eg_wal_buf;

/* A txn's pending change to its tenants' storage usage (usage.c): one
 * entry per tenant it touched, written to tenant_usage at its commit. */
typedef struct {
  char tenant[EG_STORE_ID_MAX + 1];
  int64_t delta;
} eg_usage_delta;
typedef struct {
  eg_usage_delta *v;
  size_t n, cap;
} eg_usage_buf;

enum eg_wal_kind { EG_WAL_PUT = 0, EG_WAL_DEL = 1, EG_WAL_DEL_PREFIX = 2 };

enum eg_txn_kind { EG_TXN_READ, EG_TXN_WRITE, EG_TXN_SUB };

struct eg_txn {
  eg_store *s;
  enum eg_txn_kind kind;
  /* READ: NULL until the first begin, then kept (reset) between requests so
   * its reader slot is reused. */
  MDB_txn *txn;
  int live;      /* READ: between reader_begin and reader_end */
  eg_txn *parent; /* SUB: the txn it nests in */
  eg_txn *child;  /* WRITE/SUB: the open sub txn, if any */
  eg_wal_buf ops; /* WRITE/SUB: what this txn changed, for the WAL */
  /* WRITE on a replica: LSN and epoch of the last record applied from the
   * primary's log (0: a local write, which gets a new record at commit). */
  uint64_t applied_lsn, applied_epoch;
  uint64_t new_epoch; /* WRITE: epoch set by eg_store_set_epoch, or 0 */
  int erasure;        /* WRITE/SUB: eg_store_mark_erasure was called */
  /* WRITE: a migration's back-fill, which every copy of the store runs
   * itself at open: its writes are not logged. */
  int unlogged;
  eg_usage_buf usage;  /* WRITE/SUB: what this txn changed tenants' usage by */
  int limits_touched;  /* WRITE/SUB: tenant_limits changed (limits_gen) */
  /* WRITE/SUB: by dbi, the cursor eg_usage__put/del write a counted data
   * DB through, opened in this txn at its first write there. LMDB frees a
   * write txn's cursors itself when the txn ends (committed or aborted;
   * a sub's at its own end), so they are never closed here: they go with
   * the struct. */
  MDB_cursor *cursors[EG_TXN_CURSORS];
};

/* wal.c: records one change in t's op buffer. */
eg_err eg_wal__log(eg_txn *t, MDB_dbi dbi, enum eg_wal_kind kind, const eg_key *k,
                   const void *v, size_t n);
/* wal.c: the bytes one put of a val_len-byte value under a key_len-byte
 * key in dbi adds to a txn's log record. */
size_t eg_wal__put_len(const eg_store *s, MDB_dbi dbi, size_t key_len, size_t val_len);
/* wal.c: appends child's ops to parent's (a nested commit); frees child's. */
eg_err eg_wal__merge(eg_txn *parent, eg_txn *child);
void eg_wal__buf_free(eg_wal_buf *b);
/* wal.c: in write_commit: stores the txn's record (lsn, epoch, now, ops)
 * in the wal DB, or, on a replica, nothing new (the applied records are
 * already there). */
eg_err eg_wal__append(eg_txn *w, uint64_t lsn, uint64_t epoch);

/* usage.c: the storage usage of each tenant (tenant_usage: u8len tenant ->
 * u64 BE bytes) is the sum of key + value lengths of its keys in every
 * counted data DB. It is kept here, at the four writers of records.c (the
 * only way into a data DB), so no write path can miss it: each change adds
 * to its txn's usage buffer, a nested commit merges it into the parent's,
 * and the top-level commit writes one tenant_usage row per tenant (a
 * logged put like any other: a replica applies the rows, it never counts
 * itself). */
/* 1 if the keys of data DB name count toward usage: every data DB but
 * the tenant-less or bookkeeping ones (sweep_due, index_state,
 * tenant_limits, tenant_usage, key_jobs). */
int eg_store__usage_counted(const char *name);
/* The tenant a counted key belongs to (its u8len tenant prefix) into
 * tenant (EG_STORE_ID_MAX + 1 bytes); 0 if the key has none (store_items'
 * expiry entries start with 0x00). */
int eg_store__key_tenant(const void *key, size_t klen, char *tenant);
/* The put and the delete of records.c's writers. On a counted dbi each
 * is one B-tree search through t's cursor of dbi (t->cursors), which
 * finds the old value's size on the way, and adds the change in bytes to
 * t's usage; any other DB takes a plain mdb_put / mdb_del.
 * put: flags 0, MDB_NOOVERWRITE (EG_EEXIST if key is taken: nothing
 * changed, nothing counted) and/or MDB_RESERVE (val->mv_data is then
 * the room to fill, as mdb_put's). del: EG_ENOTFOUND if key is absent. */
eg_err eg_usage__put(eg_txn *t, MDB_dbi dbi, const MDB_val *key, MDB_val *val, unsigned flags);
eg_err eg_usage__del(eg_txn *t, MDB_dbi dbi, const MDB_val *key);
/* Adds bytes (may be negative) to the usage of key's tenant in t, if dbi
 * is counted. */
eg_err eg_usage__count(eg_txn *t, MDB_dbi dbi, const void *key, size_t klen, int64_t bytes);
/* A nested commit: before committing child, room in parent for child's
 * changes (EG_ENOMEM); after it committed, adds them to parent's (cannot
 * fail then) and frees child's. A child whose commit failed adds nothing. */
eg_err eg_usage__reserve(eg_txn *parent, const eg_txn *child);
void eg_usage__merge(eg_txn *parent, eg_txn *child);
/* In write_commit, before the record is stamped: the tenant_usage rows. */
eg_err eg_usage__flush(eg_txn *w);
void eg_usage__free(eg_usage_buf *b);
/* migrate.c (migration 7): the usage of every tenant of the store in txn,
 * counted afresh into tenant_usage. */
eg_err eg_usage__recount(MDB_txn *txn, char *err, size_t errlen);

/* lsn.c: wakes every eg_store_wait_lsn (after a commit). */
void eg_store__lsn_notify(eg_store *s);
eg_err eg_store__lsn_init(eg_store *s);
void eg_store__lsn_destroy(eg_store *s);

/* env.c: the name of data DB dbi, or NULL if dbi is not one (meta, wal). */
const char *eg_store__db_name(const eg_store *s, MDB_dbi dbi);
/* env.c: the data DB called name[0..n); EG_ECORRUPT if there is none. */
eg_err eg_store__db_by_name(const eg_store *s, const char *name, MDB_dbi *dbi);

/* Converts an LMDB or errno code to eg_err (see storage.h's rules). */
eg_err eg_store__err(int rc);
/* datadir.c: eg_store__err for the result of mdb_txn_commit, which also
 * tells a short write on a full disk (EIO) from an I/O error. */
eg_err eg_store__commit_err(const eg_store *s, int rc);
/* txn.c: after every durable commit with its result: logs the start
 * (EG_ENOSPC) and the end (EG_OK) of a full-disk episode, once each. */
void eg_store__disk_episode(eg_store *s, eg_err commit);
/* One flush of the data file (mdb_env_sync): with defer_meta_sync, what
 * makes a commit's meta page durable. A failure breaks the store and
 * returns EG_EBROKEN (eg_store_sync says why). Any thread. */
eg_err eg_store__flush(eg_store *s);
/* Marks s broken (and says so once) when e is EG_EBROKEN; returns e. */
eg_err eg_store__broken(eg_store *s, eg_err e);
/* The eg_err of a top-level commit LMDB refused with rc (nonzero):
 * EG_EBROKEN if the failure broke the env (s is then marked broken), else
 * eg_store__commit_err. Call with no txn of this thread open. */
eg_err eg_store__commit_failed(eg_store *s, int rc);
/* txn.c, with defer_meta_sync: a top-level commit failed with LMDB's rc
 * (e: eg_store__commit_failed's result) while another commit's meta page
 * waited for a flush: this commit's flush, which the kernel reports failed
 * once only (a retried flush may return 0 though the pages were dropped).
 * Unless rc says the commit failed before its flush, that commit's fate is
 * unknown: the store is broken (eg_store_sync). Decided on rc, not on e. */
void eg_store__unflushed_commit_failed(eg_store *s, int rc, eg_err e);

/* Nonzero if reads may use t now. */
static inline int eg_txn_readable(const eg_txn *t) {
  return t && t->txn && (t->kind != EG_TXN_READ || t->live) && !t->child;
}
/* Nonzero if writes may use t now (the innermost open write or sub txn). */
static inline int eg_txn_writable(const eg_txn *t) {
  return t && t->txn && t->kind != EG_TXN_READ && !t->child;
}

/* env.c: after MDB_MAP_RESIZED (another process grew the map), adopts the
 * size recorded in the file. Takes map_lock's write side. */
eg_err eg_store__adopt_map_size(eg_store *s);
/* env.c: meta u64 value; 0 if absent. EG_ECORRUPT if not 8 bytes. */
eg_err eg_store__meta_get_u64(MDB_txn *txn, MDB_dbi meta, const char *name, uint64_t *out);
/* Schema version of the file: 0 when fresh. */
eg_err eg_store__meta_get_version(MDB_txn *txn, MDB_dbi meta, uint32_t *out);
eg_err eg_store__meta_put_u64(MDB_txn *txn, MDB_dbi meta, const char *name, uint64_t v);

/* meta_kv.c: eg_store_meta_get/put inside the caller's txn (at open,
 * before the store is usable). */
eg_err eg_store__named_get(MDB_txn *txn, MDB_dbi meta, const char *name, void *buf, size_t cap,
                          size_t *len);
eg_err eg_store__named_put(MDB_txn *txn, MDB_dbi meta, const char *name, const void *val,
                          size_t n);

/* datadir.c: the data dir and the files beside data.mdb. Each writes a
 * reason naming the file into err when it refuses. */
/* Creates dir mode 0700, or tightens an existing one this user owns to
 * 0700 (saying so on stderr); refuses a dir someone else owns that others
 * may read. */
eg_err eg_store__make_dir(const char *dir, char *err, size_t errlen);
/* Before LMDB opens dir: EG_ECORRUPT if data.mdb is missing or empty while
 * something says a store lived here (LMDB would start an empty one in its
 * place): the store-id marker, dir/keyring, or the keyring file in use
 * (may be NULL) lying in dir under any name. */
eg_err eg_store__check_data_file(const char *dir, const char *keyring, char *err, size_t errlen);
/* After LMDB opened s: EG_ECORRUPT if data.mdb is shorter than the pages
 * its meta page says it holds (reading them would SIGBUS). */
eg_err eg_store__check_data_size(eg_store *s, char *err, size_t errlen);
/* Inside the open txn: compares the store id in meta with the marker
 * file. Same: fine. Meta only (a snapshot was installed, or the marker was
 * lost): *marker gets the id to write. Neither (a new store, or one from
 * before markers): a new id is put in meta and into *marker. Marker only,
 * or two different ids: EG_ECORRUPT, data.mdb was replaced. *marker is ""
 * when nothing is to be written. */
eg_err eg_store__check_store_id(eg_store *s, MDB_txn *txn, char *marker, size_t cap, char *err,
                                size_t errlen);
/* After the open txn committed: writes the marker file (atomically). */
eg_err eg_store__write_store_id(const char *dir, const char *id, char *err, size_t errlen);
/* Removes the marker (before a snapshot replaces data.mdb). */
eg_err eg_store__drop_store_id(const char *dir);

/* migrate.c: brings the layout in txn from *version up to
 * EG_STORE_SCHEMA_VERSION, one numbered migration at a time, and records
 * each step in meta. On failure writes a reason into err. */
eg_err eg_store__migrate(MDB_txn *txn, MDB_dbi meta, uint32_t *version, char *err,
                         size_t errlen);

/*
 * Every change to a data DB goes through the four writers below, which
 * also record it in t's write-ahead-log buffer (wal.c), so replicas see
 * exactly what the primary wrote. Never call mdb_put/mdb_del on a data DB
 * directly. t must be writable.
 */
/* lifecycle.c: the lifecycle index entries (storage.h, "lifecycle") of a
 * record before (old) and after (neu) a write; NULL for none. Entries that
 * stay the same are not rewritten. */
eg_err eg_store__session_index(eg_txn *t, const char *tenant, const eg_session_rec *old,
                               const eg_session_rec *neu);
eg_err eg_store__memory_index(eg_txn *t, const char *tenant, const eg_memory_rec *old,
                              const eg_memory_rec *neu);
/* lifecycle.c: before message rec is put: moves the session's
 * EG_SWEEP_SESSION_MESSAGES entry when rec becomes its oldest message. */
eg_err eg_store__message_index(eg_txn *t, const char *tenant, const char *session_id,
                               const eg_message_rec *rec);
/* lifecycle.c: removes every lifecycle entry of stored session rec,
 * including its messages' (call before the messages go). */
eg_err eg_store__session_unindex(eg_txn *t, const char *tenant, const eg_session_rec *rec);
/* lifecycle.c: after a retired session's record went: its
 * EG_SWEEP_SESSION_PURGE entry due at now_us when messages are left, else
 * its stray idempotency keys go at once. */
eg_err eg_store__purge_mark(eg_txn *t, const char *tenant, const char *sid, const char *user_id,
                            int64_t now_us);
/* DeleteUser's share of retired sessions (removed by the sweeper, their
 * messages not yet purged): erases the messages and retry records of
 * user_id's ones, and their purge entries, within budget (*left when it
 * ran out; *messages counts what went). */
eg_err eg_store__erase_purging(eg_txn *t, const char *tenant, const char *user_id,
                               uint64_t budget, uint64_t *spent, uint64_t *messages, int *left);
/* messages.c: DeleteUser's share of one session's messages: deletes them,
 * lowest seq first, each with its postings (which count as keys spent),
 * while the budget lasts (*left when it ran out; the step's first message
 * goes even when it alone exceeds the budget); *n (may be NULL) counts the
 * messages. */
eg_err eg_store__erase_messages(eg_txn *t, const char *tenant, const char *session_id,
                                uint64_t budget, uint64_t *spent, uint64_t *n, int *left);
/* lifecycle.c: the session's lowest-seq message, decoded (*out NULL when
 * it has none; else the caller's to free). */
eg_err eg_store__first_message(eg_txn *t, const char *tenant, const char *sid,
                               eg_message_rec **out);
/* message_index.c: deletes the postings of every message of the session
 * (the messages stay) and settles their stats. */
eg_err eg_store__session_postings_del(eg_txn *t, const char *tenant, const char *sid);
/* Deletes the keys of dbi under prefix while *spent < budget (*left when
 * it ran out); *n (may be NULL) counts them. */
eg_err eg_store__erase_range(eg_txn *t, MDB_dbi dbi, const eg_key *prefix, uint64_t budget,
                             uint64_t *spent, uint64_t *n, int *left);
/* store_items.c: DeleteTenant's share of the key-value store: the
 * tenant's items (each with its expiry index entry) within budget,
 * their keys counted into *n (may be NULL); *left when it ran out. */
eg_err eg_store__erase_tenant_items(eg_txn *t, const char *tenant, uint64_t budget,
                                    uint64_t *spent, uint64_t *n, int *left);
/* checkpoints.c: DeleteUser's share of the user's checkpoints, their index
 * entries and pending writes, within budget (*left when it ran out). */
eg_err eg_store__erase_checkpoints(eg_txn *t, const char *tenant, const char *user_id,
                                   uint64_t budget, uint64_t *spent, int *left);
/* lifecycle.c: migration 4's back-fill: the lifecycle entries of every
 * session, message range and memory in txn (the v4 DBs exist already). */
eg_err eg_store__backfill_v4(MDB_txn *txn, char *err, size_t errlen);
/* env.c: every data DB (replicated through the WAL under its name), in
 * the order eg_store_visit_data visits them. */
extern const struct eg_db_slot eg_store__data_db_table[];
extern const size_t eg_store__n_data_dbs;
/* env.c: opens each existing DB of slots[0..n) into its field of s;
 * EG_ECORRUPT if one is missing. err gets what (may be "") and the DB. */
eg_err eg_store__open_dbs(MDB_txn *txn, eg_store *s, const struct eg_db_slot *slots, size_t n,
                          const char *what, char *err, size_t errlen);
/* lifecycle.c: what sessions_by_activity sorts rec by:
 * max(update_time_us, last_activity_us). */
int64_t eg_store__session_activity(const eg_session_rec *rec);
/* lifecycle.c: EG_EINVAL if rec's lifecycle fields do not fit the layout
 * (metadata_hashes unsorted or too many, negative times). */
eg_err eg_store__session_check(const eg_session_rec *rec);

/* message_index.c: the keyword index entries of one message
 * (storage/message_index.h). Each does nothing for an unindexed message
 * (index_version 0). */
/* EG_EINVAL if rec's index fields do not fit the layout: more than
 * EG_MESSAGE_TERMS_MAX terms, index_tf not one byte per term, no valid
 * index_user_id, a role beyond a byte; or terms without a version. */
eg_err eg_store__message_terms_check(const eg_message_rec *rec);
/* Puts rec's postings and adds it to its user's and its tenant's stats. */
eg_err eg_store__message_terms_put(eg_txn *t, const char *tenant, const char *sid,
                                   const eg_message_rec *rec);
/* The bytes eg_store__message_terms_put adds to the log, into *len;
 * EG_EINVAL as eg_store__message_terms_check, or for ids the keys refuse. */
eg_err eg_store__message_terms_len(const eg_store *s, const char *tenant, const char *sid,
                                   const eg_message_rec *rec, size_t *len);
/* The stats a delete path owes for the messages it removed, of one user:
 * written once (eg_store__message_debt_settle), not once per message. */
typedef struct {
  char user[EG_STORE_ID_MAX + 1];
  uint64_t messages, words;
} eg_message_debt;
/* Deletes the postings of stored message rec (*n, may be NULL, counts
 * them) and adds rec to d (settling d first when it is another user's). */
eg_err eg_store__message_terms_del(eg_txn *t, const char *tenant, const char *sid,
                                   const eg_message_rec *rec, eg_message_debt *d, uint64_t *n);
/* Subtracts d from the stats (a row left with no message goes); d is then
 * empty. Call before the txn commits. */
eg_err eg_store__message_debt_settle(eg_txn *t, const char *tenant, eg_message_debt *d);

/* records.c: packs m straight into LMDB's buffer (MDB_RESERVE) under k.
 * flags: 0 or MDB_NOOVERWRITE (then EG_EEXIST if k is taken). */
eg_err eg_store__put_msg(eg_txn *t, MDB_dbi dbi, const eg_key *k, const ProtobufCMessage *m,
                         unsigned flags);
/* records.c: puts raw bytes v[0..n) under k. */
eg_err eg_store__put(eg_txn *t, MDB_dbi dbi, const eg_key *k, const void *v, size_t n);
/* records.c: deletes k; EG_ENOTFOUND if absent. */
eg_err eg_store__del(eg_txn *t, MDB_dbi dbi, const eg_key *k);
/* records.c: eg_store__del, but an absent k is EG_OK (an index entry
 * that may not be there). */
eg_err eg_store__del_quiet(eg_txn *t, MDB_dbi dbi, const eg_key *k);
/* records.c: 1 if a[0..n) is strictly ascending (sorted hashes, no
 * repeats), else 0. */
int eg_store__u64_ascending(const uint64_t *a, size_t n);
/* records.c: decodes v as desc; EG_ECORRUPT if it does not decode.
 * OUT: *out, a heap copy the caller frees with protobuf_c_message_free_unpacked. */
eg_err eg_store__decode(const ProtobufCMessageDescriptor *desc, const MDB_val *v,
                        ProtobufCMessage **out);
/* records.c: mdb_get of k decoded as desc (EG_ENOTFOUND if absent). */
eg_err eg_store__get_msg(MDB_txn *txn, MDB_dbi dbi, const eg_key *k,
                         const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out);
/* records.c: positions c on the first key at or after seek. Returns an
 * LMDB code: MDB_NOTFOUND if there is none. */
int eg_store__seek_at(MDB_cursor *c, const eg_key *seek, MDB_val *k, MDB_val *v);
/* records.c: positions c on the greatest key below seek (inclusive: or
 * equal to it). Returns an LMDB code: MDB_NOTFOUND if there is none. */
int eg_store__seek_below(MDB_cursor *c, const eg_key *seek, int inclusive, MDB_val *k,
                         MDB_val *v);
/* records.c: deletes every key starting with prefix; counts them into
 * *n (may be NULL). */
eg_err eg_store__del_prefix(eg_txn *t, MDB_dbi dbi, const eg_key *prefix, uint64_t *n);
/* records.c: the same without logging (a replica applying the log). */
eg_err eg_store__del_prefix_raw(MDB_txn *txn, MDB_dbi dbi, const eg_key *prefix, uint64_t *n);

#endif
