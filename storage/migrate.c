/*
 * Numbered schema migrations, run at open inside the open txn, so a crash
 * mid-way leaves the previous version intact. Migration N turns a layout of
 * version N-1 into version N and is never edited once released: a new
 * layout is a new row. Adding a record field needs no migration (protobuf).
 */
#include <stdio.h>
#include <string.h>

#include "storage/internal.h"

/* meta: the meta DB, for a migration that records something there. */
typedef eg_err (*eg_migrate_fn)(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen);

static eg_err eg_migrate_create_db(MDB_txn *txn, const char *name, char *err, size_t errlen) {
  MDB_dbi dbi;
  int rc = mdb_dbi_open(txn, name, MDB_CREATE, &dbi);
  if (rc) snprintf(err, errlen, "create db %s: %s", name, mdb_strerror(rc));
  return eg_store__err(rc);
}

/* Version 1, the initial layout (storage.h): meta exists already (it holds
 * the version); add the four data DBs. */
static eg_err eg_migrate_v1(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen) {
  (void)meta;
  static const char *const dbs[] = {EG_DB_SESSIONS, EG_DB_SESSIONS_BY_USER, EG_DB_MESSAGES,
                                    EG_DB_IDEMPOTENCY};
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    eg_err e = eg_migrate_create_db(txn, dbs[i], err, errlen);
    if (e) return e;
  }
  return EG_OK;
}

/* Version 2: the write-ahead log (wal.c), one record per write txn. */
static eg_err eg_migrate_v2(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen) {
  (void)meta;
  return eg_migrate_create_db(txn, EG_DB_WAL, err, errlen);
}

/* Version 3: memories, their per-user meta, vectors, blind-index postings
 * and per-user counters (storage/memories.h). */
static eg_err eg_migrate_v3(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen) {
  (void)meta;
  static const char *const dbs[] = {EG_DB_MEMORIES, EG_DB_MEMORIES_BY_USER, EG_DB_MEMORY_VECTORS,
                                    EG_DB_MEMORY_TERMS, EG_DB_MEMORY_USERS};
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    eg_err e = eg_migrate_create_db(txn, dbs[i], err, errlen);
    if (e) return e;
  }
  return EG_OK;
}

/* Version 4: the lifecycle indexes (sessions_by_activity, sweep_due,
 * session_terms) and the per-tenant retention policy (storage.h), with the
 * index entries of the data already there, built at the store's last LSN
 * (recorded as index_base_lsn: 0 for a new store). The back-fill is not
 * logged, so replication compares that LSN (eg_store_index_base_lsn). */
static eg_err eg_migrate_v4(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen) {
  static const char *const dbs[] = {EG_DB_SESSIONS_BY_ACTIVITY, EG_DB_SWEEP_DUE, EG_DB_RETENTION,
                                    EG_DB_SESSION_TERMS};
  uint64_t lsn;
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    eg_err e = eg_migrate_create_db(txn, dbs[i], err, errlen);
    if (e) return e;
  }
  eg_err e = eg_store__backfill_v4(txn, err, errlen);
  if (!e) e = eg_store__meta_get_u64(txn, meta, EG_META_LAST_LSN, &lsn);
  return e ? e : eg_store__meta_put_u64(txn, meta, EG_META_INDEX_BASE_LSN, lsn);
}

/* Version 5: agent state. New DBs only, empty at creation: nothing to
 * back-fill. */
static eg_err eg_migrate_v5(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen) {
  static const char *const dbs[] = {EG_DB_CHECKPOINTS, EG_DB_CHECKPOINTS_BY_USER,
                                    EG_DB_CHECKPOINT_WRITES, EG_DB_STORE_ITEMS,
                                    EG_DB_STORE_NAMESPACES};
  (void)meta;
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    eg_err e = eg_migrate_create_db(txn, dbs[i], err, errlen);
    if (e) return e;
  }
  return EG_OK;
}

/* The tokenizer version every index entry of schema 6 is made with (a
 * literal: this migration is frozen; server/tokenizer.h's
 * EG_TOKENIZER_VERSION may grow past it). */
#define EG_MIGRATE_V6_TOKENIZER 2

/* The state row of index `name`: at `old_version` when db holds a record,
 * else at EG_MIGRATE_V6_TOKENIZER (a new store: every entry will be made by
 * this build's tokenizer, so no reindex, no background write). */
static eg_err eg_migrate_index_state(MDB_txn *txn, MDB_dbi db, MDB_dbi state, const char *name,
                                     uint32_t old_version, char *err, size_t errlen) {
  MDB_stat st;
  int rc = mdb_stat(txn, db, &st);
  if (rc) return eg_store__err(rc);
  Engram__Storage__V1__IndexStateRecord rec = ENGRAM__STORAGE__V1__INDEX_STATE_RECORD__INIT;
  rec.version = st.ms_entries ? old_version : EG_MIGRATE_V6_TOKENIZER;
  uint8_t buf[16];
  size_t n = engram__storage__v1__index_state_record__pack(&rec, buf);
  MDB_val k = {strlen(name), (void *)name}, v = {n, buf};
  rc = mdb_put(txn, state, &k, &v, 0);
  if (rc) snprintf(err, errlen, "index_state %s: %s", name, mdb_strerror(rc));
  return eg_store__err(rc);
}

/* Version 6: keyword search. The message index and the indexes' state. A
 * store that holds memories gets a "memories" row at tokenizer version 1
 * (the ASCII rules their postings were made with) and one that holds
 * messages a "messages" row at 0 (none indexed): engramd reindexes them in
 * the background. An empty DB gets its row at version 2: a new store never
 * runs a reindex. Not logged (as migration 4's back-fill), and so not alike
 * on every copy of one history: each copy migrates at its own position.
 * The primary's job state is logged, so its rows replace a replica's as
 * they stream. One case stays open until then: a new, empty replica that
 * replays a 0.14 primary's log from its start gets version 2 rows over
 * version 1 records; when that primary is upgraded, its own migration
 * finds them, its job's rows stream to the replica and the job rewrites
 * them (docs/operations.md: upgrade replicas that hold data, or bootstrap
 * new ones from a snapshot). A row missing all the same reads as
 * server/reindex.c's eg_state_missing says. */
static eg_err eg_migrate_v6(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen) {
  static const char *const dbs[] = {EG_DB_MESSAGE_TERMS, EG_DB_MESSAGE_INDEX_STATS,
                                    EG_DB_INDEX_STATE};
  MDB_dbi memories, messages, state;
  (void)meta;
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    eg_err e = eg_migrate_create_db(txn, dbs[i], err, errlen);
    if (e) return e;
  }
  int rc = mdb_dbi_open(txn, EG_DB_MEMORIES, 0, &memories);
  if (!rc) rc = mdb_dbi_open(txn, EG_DB_MESSAGES, 0, &messages);
  if (!rc) rc = mdb_dbi_open(txn, EG_DB_INDEX_STATE, 0, &state);
  if (rc) {
    snprintf(err, errlen, "migration 6: open: %s", mdb_strerror(rc));
    return eg_store__err(rc);
  }
  eg_err e = eg_migrate_index_state(txn, memories, state, EG_INDEX_MEMORIES, 1, err, errlen);
  return e ? e : eg_migrate_index_state(txn, messages, state, EG_INDEX_MESSAGES, 0, err, errlen);
}

/* Security: per-tenant limits and usage, key jobs. The usage of the
 * tenants already stored is counted here, in the open txn (one walk of
 * every counted data DB; each copy of the store, replicas included, counts
 * its own data, which is the primary's). */
static eg_err eg_migrate_v7(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen) {
  static const char *const dbs[] = {EG_DB_TENANT_LIMITS, EG_DB_TENANT_USAGE, EG_DB_KEY_JOBS};
  (void)meta;
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    eg_err e = eg_migrate_create_db(txn, dbs[i], err, errlen);
    if (e) return e;
  }
  return eg_usage__recount(txn, err, errlen);
}

/* Blind-index key stamps: memory metas written from here on are layout 4
 * (storage/memories.h, blind_key_id). Nothing to convert (layouts 1 to 3
 * stay readable, their records under the blind-index row's legacy key):
 * the version only keeps an older engramd, which would read a layout 4
 * meta as corrupt, from opening the store. */
static eg_err eg_migrate_v8(MDB_txn *txn, MDB_dbi meta, char *err, size_t errlen) {
  (void)txn;
  (void)meta;
  (void)err;
  (void)errlen;
  return EG_OK;
}

static const struct eg_migration {
  uint32_t version;
  const char *what;
  eg_migrate_fn fn;
} eg_migrations[] = {
    {1, "initial layout: meta, sessions, sessions_by_user, messages, idempotency",
     eg_migrate_v1},
    {2, "write-ahead log: wal", eg_migrate_v2},
    {3, "memories: memories, memories_by_user, memory_vectors, memory_terms, memory_users",
     eg_migrate_v3},
    {4, "lifecycle: sessions_by_activity, sweep_due, retention, session_terms", eg_migrate_v4},
    {5, "agent state: checkpoints, checkpoints_by_user, checkpoint_writes, store_items, "
        "store_namespaces", eg_migrate_v5},
    {6, "keyword search: message_terms, message_index_stats, index_state", eg_migrate_v6},
    {7, "security: tenant_limits, tenant_usage, key_jobs", eg_migrate_v7},
    {8, "blind-index key stamps: memory meta layout 4", eg_migrate_v8},
};

/* Rows are versions 1..N in order, and N is the version this build writes. */
_Static_assert(sizeof eg_migrations / sizeof eg_migrations[0] == EG_STORE_SCHEMA_VERSION,
               "one migration per schema version");

static eg_err eg_migrate_put_version(MDB_txn *txn, MDB_dbi meta, uint32_t version) {
  uint8_t b[4];
  eg_be32_put(b, version);
  MDB_val k = {sizeof EG_META_SCHEMA_VERSION - 1, EG_META_SCHEMA_VERSION};
  MDB_val v = {sizeof b, b};
  return eg_store__err(mdb_put(txn, meta, &k, &v, 0));
}

eg_err eg_store__migrate(MDB_txn *txn, MDB_dbi meta, uint32_t *version, char *err,
                         size_t errlen) {
  for (size_t i = 0; i < sizeof eg_migrations / sizeof eg_migrations[0]; i++) {
    const struct eg_migration *m = &eg_migrations[i];
    if (m->version <= *version) continue;
    eg_err e = m->fn(txn, meta, err, errlen);
    if (!e) e = eg_migrate_put_version(txn, meta, m->version);
    if (e) {
      if (err && errlen && !err[0])
        snprintf(err, errlen, "migration %u (%s): %s", m->version, m->what, eg_err_msg(e));
      return e;
    }
    *version = m->version;
  }
  return EG_OK;
}
