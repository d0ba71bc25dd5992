/* Whole-store operations: a consistent compacted copy (replica snapshots,
 * backups), its installation, reading and checking a copy's file, and a
 * walk over every data DB (checksums, verifying a backup). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/internal.h"

/* A single-file store opened read-only, with its meta read. */
typedef struct {
  MDB_env *env;
  MDB_txn *txn;
} eg_store_file;

static void eg_store_file_close(eg_store_file *f) {
  if (f->txn) mdb_txn_abort(f->txn);
  if (f->env) mdb_env_close(f->env);
}

/* Opens the store file at path read-only in f and reads what it holds
 * into out (eg_store_file_info_read's contract). Close f whatever it
 * returns. */
static eg_err eg_store_file_open(const char *path, eg_store_file *f, eg_store_file_info *out) {
  MDB_dbi meta;
  MDB_envinfo info;
  MDB_stat st;
  struct stat fst;
  *f = (eg_store_file){NULL, NULL};
  *out = (eg_store_file_info){0};
  int rc = mdb_env_create(&f->env);
  if (!rc) rc = mdb_env_set_maxdbs(f->env, EG_STORE_MAX_DBS);
  /* No lock file: nothing else has the file open. */
  if (!rc) rc = mdb_env_open(f->env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600);
  if (!rc) rc = mdb_env_info(f->env, &info);
  if (!rc) rc = mdb_env_stat(f->env, &st);
  if (!rc && stat(path, &fst) != 0) rc = errno;
  /* A file cut short: its meta pages name pages past its end, and reading
   * one through the map would be a SIGBUS. Checked before any read. */
  if (!rc && (uint64_t)fst.st_size < ((uint64_t)info.me_last_pgno + 1) * st.ms_psize)
    rc = MDB_CORRUPTED;
  if (!rc) rc = mdb_txn_begin(f->env, NULL, MDB_RDONLY, &f->txn);
  if (!rc) rc = mdb_dbi_open(f->txn, EG_DB_META, 0, &meta);
  /* Not an LMDB file, or one without our meta DB: not a store. */
  eg_err e = rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_NOTFOUND ||
                     rc == MDB_CORRUPTED
                 ? EG_ECORRUPT
                 : eg_store__err(rc);
  if (!e) e = eg_store__meta_get_version(f->txn, meta, &out->schema_version);
  if (!e) e = eg_store__meta_get_u64(f->txn, meta, EG_META_LAST_LSN, &out->lsn);
  if (!e) e = eg_store__meta_get_u64(f->txn, meta, EG_META_EPOCH, &out->epoch);
  if (!e && !out->epoch) out->epoch = 1;
  return e == EG_ENOTFOUND ? EG_ECORRUPT : e;
}

eg_err eg_store_file_info_read(const char *path, eg_store_file_info *out) {
  eg_store_file f;
  eg_err e = eg_store_file_open(path, &f, out);
  eg_store_file_close(&f);
  return e;
}

eg_err eg_store_file_check(const char *path, uint64_t lsn, uint64_t epoch,
                           eg_store_file_info *info, char *why, size_t whylen) {
  eg_err e = eg_store_file_info_read(path, info);
  if (e) {
    snprintf(why, whylen, "not a readable store file (%s)", eg_err_msg(e));
    return EG_ECORRUPT;
  }
  if (info->lsn != lsn || info->epoch != epoch) {
    snprintf(why, whylen, "holds lsn %llu epoch %llu, announced as lsn %llu epoch %llu",
             (unsigned long long)info->lsn, (unsigned long long)info->epoch,
             (unsigned long long)lsn, (unsigned long long)epoch);
    return EG_ECORRUPT;
  }
  /* An older schema is migrated when the store opens; a newer one cannot be. */
  if (info->schema_version == 0 || info->schema_version > EG_STORE_SCHEMA_VERSION) {
    snprintf(why, whylen, "schema version %u, this build reads 1 to %u", info->schema_version,
             EG_STORE_SCHEMA_VERSION);
    return EG_ECORRUPT;
  }
  return EG_OK;
}

/* Visits every key of dbi (named name) in txn, ascending. */
static eg_err eg_store_visit_db(MDB_txn *txn, MDB_dbi dbi, const char *name, eg_kv_visit_fn fn,
                                void *arg) {
  MDB_cursor *c = NULL;
  MDB_val k, v;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (!rc) rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  while (!rc) {
    fn(arg, name, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (c) mdb_cursor_close(c);
  return rc == MDB_NOTFOUND ? EG_OK : eg_store__err(rc);
}

eg_err eg_store_file_visit(const char *path, eg_store_file_info *info, eg_kv_visit_fn fn,
                           void *arg) {
  eg_store_file f;
  eg_err e = eg_store_file_open(path, &f, info);
  for (size_t i = 0; !e && i < eg_store__n_data_dbs; i++) {
    const char *name = eg_store__data_db_table[i].name;
    MDB_dbi dbi;
    int rc = mdb_dbi_open(f.txn, name, 0, &dbi);
    /* A DB a later migration adds: absent from an older schema's file. */
    if (rc == MDB_NOTFOUND && info->schema_version < EG_STORE_SCHEMA_VERSION) continue;
    e = rc == MDB_NOTFOUND ? EG_ECORRUPT : eg_store__err(rc);
    if (!e) e = eg_store_visit_db(f.txn, dbi, name, fn, arg);
  }
  eg_store_file_close(&f);
  return e;
}

/* Longest a copy waits for the last commit it holds to be flushed: the
 * writer flushes a held commit with its next commit or at once when idle,
 * so past this the store is stuck or stopping. */
#define EG_COPY_DURABLE_WAIT_MS 10000

eg_err eg_store_copy(eg_store *s, const char *path, eg_store_file_info *out) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return EG_EIO;
  /* The copy runs its own read txn: keep the map from moving under it. */
  if (pthread_rwlock_rdlock(&s->map_lock) != 0) {
    close(fd);
    return EG_EIO;
  }
  int rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
  pthread_rwlock_unlock(&s->map_lock);
  /* No fsync: the copy is read back from the page cache and dropped (a
   * crash loses nothing worth keeping), and flushing a whole store's copy
   * would compete with the writer's commit flushes on the same disk. */
  close(fd);
  eg_err e = rc ? eg_store__err(rc) : eg_store_file_info_read(path, out);
  /* With defer_meta_sync the copy may hold the last commit before it is
   * durable: a replica or a backup must never hold what a power cut could
   * take from this store. */
  if (!e) e = eg_store_wait_lsn(s, out->lsn, EG_COPY_DURABLE_WAIT_MS);
  if (e) unlink(path);
  return e;
}

eg_err eg_store_install_snapshot(const char *dir, const char *snapshot_path) {
  char data[4096], lock[4096];
  snprintf(data, sizeof data, "%s/data.mdb", dir);
  snprintf(lock, sizeof lock, "%s/lock.mdb", dir);
  /* The copy carries its source's store id: drop the marker first, so the
   * next open writes the new one instead of refusing a replaced file. A
   * crash in between leaves the old data without a marker, which the next
   * open also writes back. */
  if (eg_store__drop_store_id(dir) != EG_OK) return EG_EIO;
  if (rename(snapshot_path, data) != 0) return EG_EIO;
  /* The old lock file describes readers of the old file; nobody has the
   * store open now, and LMDB makes a fresh one. */
  unlink(lock);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return EG_OK;
}

const char *eg_store_dir(const eg_store *s) { return s->dir; }

eg_err eg_store_visit_data(eg_txn *t, eg_kv_visit_fn fn, void *arg) {
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_err e = EG_OK;
  for (size_t i = 0; !e && i < t->s->n_data_dbs; i++)
    e = eg_store_visit_db(t->txn, t->s->data_dbs[i].dbi, t->s->data_dbs[i].name, fn, arg);
  return e;
}

eg_err eg_store_txn_lsn(eg_txn *t, uint64_t *lsn) {
  if (!eg_txn_readable(t)) return EG_EINVAL;
  return eg_store__meta_get_u64(t->txn, t->s->meta, EG_META_LAST_LSN, lsn);
}

eg_err eg_store_index_records(eg_txn *t, const char *name, uint64_t *n) {
  MDB_stat st;
  MDB_dbi dbi;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  if (strcmp(name, EG_INDEX_MEMORIES) == 0)
    dbi = t->s->memories;
  else if (strcmp(name, EG_INDEX_MESSAGES) == 0)
    dbi = t->s->messages;
  else
    return EG_EINVAL;
  int rc = mdb_stat(t->txn, dbi, &st);
  if (rc) return eg_store__err(rc);
  *n = st.ms_entries;
  return EG_OK;
}
