/* Reader, writer and nested txns. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "storage/internal.h"

/* How often a begin adopts a map another process grew before giving up. */
#define EG_RESIZE_TRIES 3

static eg_txn *eg_txn_alloc(eg_store *s, enum eg_txn_kind kind) {
  eg_txn *t = calloc(1, sizeof *t);
  if (t) {
    t->s = s;
    t->kind = kind;
  }
  return t;
}

/* ---- readers ------------------------------------------------------------ */

eg_err eg_store_reader_new(eg_store *s, eg_txn **out) {
  /* The LMDB txn is made at the first begin, under map_lock. */
  eg_txn *r = eg_txn_alloc(s, EG_TXN_READ);
  if (!r) return EG_ENOMEM;
  *out = r;
  return EG_OK;
}

/* Starts or renews r's LMDB read txn. Called with map_lock read-held. */
static int eg_reader_start(eg_txn *r) {
  if (!r->txn) return mdb_txn_begin(r->s->env, NULL, MDB_RDONLY, &r->txn);
  int rc = mdb_txn_renew(r->txn);
  if (rc) {
    /* Start from a fresh handle next time rather than renew a failed one. */
    mdb_txn_abort(r->txn);
    r->txn = NULL;
  }
  return rc;
}

eg_err eg_store_reader_begin(eg_txn *r) {
  assert(r && r->kind == EG_TXN_READ && !r->live);
  /* After a failed flush the snapshot may hold what the disk lost. */
  if (eg_store_broken(r->s)) return EG_EBROKEN;
  for (int tries = 0;; tries++) {
    if (pthread_rwlock_rdlock(&r->s->map_lock) != 0) return EG_EIO;
    int rc = eg_reader_start(r);
    if (rc == MDB_SUCCESS) {
      r->live = 1;
      return EG_OK;
    }
    pthread_rwlock_unlock(&r->s->map_lock);
    if (rc != MDB_MAP_RESIZED || tries == EG_RESIZE_TRIES) return eg_store__broken(r->s, eg_store__err(rc));
    eg_err e = eg_store__adopt_map_size(r->s);
    if (e) return e;
  }
}

void eg_store_reader_end(eg_txn *r) {
  assert(r && r->kind == EG_TXN_READ);
  if (!r->live) return;
  /* Reset keeps the reader slot for the next renew but drops the snapshot,
   * so the writer can reuse the pages it pinned. */
  mdb_txn_reset(r->txn);
  r->live = 0;
  pthread_rwlock_unlock(&r->s->map_lock);
}

void eg_store_reader_free(eg_txn *r) {
  if (!r) return;
  assert(r->kind == EG_TXN_READ);
  eg_store_reader_end(r);
  if (r->txn) mdb_txn_abort(r->txn);
  free(r);
}

/* ---- writer ------------------------------------------------------------- */

eg_err eg_store_write_begin(eg_store *s, eg_txn **out) {
  if (eg_store_broken(s)) return EG_EBROKEN;
  eg_txn *w = eg_txn_alloc(s, EG_TXN_WRITE);
  if (!w) return EG_ENOMEM;
  for (int tries = 0;; tries++) {
    int rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
    if (rc == MDB_SUCCESS) break;
    eg_err e = eg_store__err(rc);
    /* Another process grew the file past our map: adopt its size. */
    if (rc == MDB_MAP_RESIZED && tries < EG_RESIZE_TRIES) e = eg_store__adopt_map_size(s);
    if (e) {
      free(w);
      return eg_store__broken(s, e);
    }
  }
  *out = w;
  return EG_OK;
}

/* Frees the structs of t's open sub txns; LMDB ends their txns along with
 * their parent's. */
static void eg_txn_free_children(eg_txn *t) {
  eg_txn *c = t->child;
  while (c) {
    eg_txn *next = c->child;
    eg_wal__buf_free(&c->ops);
    eg_usage__free(&c->usage);
    free(c);
    c = next;
  }
  t->child = NULL;
}

static void eg_txn_free(eg_txn *t) {
  eg_txn_free_children(t);
  eg_wal__buf_free(&t->ops);
  eg_usage__free(&t->usage);
  free(t);
}

eg_err eg_store__broken(eg_store *s, eg_err e) {
  if (e == EG_EBROKEN && !atomic_exchange(&s->broken, 1))
    eg_log(EG_LOG_ERROR, "%s: LMDB cannot go on after a failed write (MDB_PANIC); the file is "
                         "consistent, the process must restart", s->dir);
  return e;
}

int eg_store_broken(const eg_store *s) { return atomic_load(&s->broken); }

void eg_store__disk_episode(eg_store *s, eg_err commit) {
  /* One line when the disk fills and one when a commit gets through again,
   * not one per failed write: a full disk fails every write until freed. */
  if (commit == EG_ENOSPC && !atomic_exchange(&s->disk_full, 1))
    eg_log(EG_LOG_ERROR, "%s: disk full: writes fail RESOURCE_EXHAUSTED until space is "
                         "freed; reads go on", s->dir);
  else if (commit == EG_OK && atomic_load_explicit(&s->disk_full, memory_order_relaxed) &&
           atomic_exchange(&s->disk_full, 0))
    eg_log(EG_LOG_INFO, "%s: disk has space again: writes resumed", s->dir);
}

/* Stamps the commit: a local write gets the next LSN and a WAL record; a
 * replica's txn takes the LSN and epoch of the records it applied. */
static eg_err eg_txn_stamp(eg_txn *w, uint64_t *lsn, uint64_t *epoch) {
  eg_store *s = w->s;
  eg_err e = EG_OK;
  if (w->applied_lsn) {
    *lsn = w->applied_lsn;
    *epoch = w->applied_epoch;
  } else {
    uint64_t last = 0;
    e = eg_store__meta_get_u64(w->txn, s->meta, EG_META_LAST_LSN, &last);
    *lsn = last + 1;
    *epoch = w->new_epoch ? w->new_epoch : eg_store_epoch(s);
    if (!e) e = eg_wal__append(w, *lsn, *epoch);
  }
  if (!e && *epoch != eg_store_epoch(s)) e = eg_store__meta_put_u64(w->txn, s->meta, EG_META_EPOCH, *epoch);
  if (!e) e = eg_store__meta_put_u64(w->txn, s->meta, EG_META_LAST_LSN, *lsn);
  if (!e && w->erasure) e = eg_store__meta_put_u64(w->txn, s->meta, EG_META_ERASE_FLOOR, *lsn);
  return e;
}

eg_err eg_store__commit_failed(eg_store *s, int rc) {
  /* A failed write of a meta page leaves the env unusable (MDB_PANIC at
   * every later begin), yet the commit returns only the write's errno: a
   * probe begin tells, so the call answers EG_EBROKEN and Health turns
   * NOT_SERVING now, not at the next call. The caller has no txn open, so
   * the probe waits at most for another writer's commit. */
  eg_txn *probe;
  eg_err e = eg_store_write_begin(s, &probe);
  if (e == EG_EBROKEN) return e;
  if (e == EG_OK) eg_store_write_abort(probe);
  return eg_store__commit_err(s, rc);
}

/* lsn is durable: readers of the log and waiters for an LSN may have it. */
static void eg_store_publish(eg_store *s, uint64_t lsn) {
  atomic_store_explicit(&s->last_lsn, lsn, memory_order_release);
  eg_store__lsn_notify(s);
}

/* A flush that the last commit waited for failed (why: e): see
 * eg_store_sync. Returns EG_EBROKEN: that commit may or may not be on
 * disk, as after a failed meta write (MDB_PANIC). */
static eg_err eg_store_flush_failed(eg_store *s, eg_err e) {
  if (!atomic_exchange(&s->broken, 1))
    eg_log(EG_LOG_ERROR, "%s: a flush failed (%s): the last commit may not be on disk; the "
                         "writes waiting for it failed and the process must restart to serve "
                         "what the disk holds", s->dir, eg_err_msg(e));
  return EG_EBROKEN;
}

void eg_store__unflushed_commit_failed(eg_store *s, int rc, eg_err e) {
  /* Refused before any write: a full map or txn, no memory. Anything
   * else may have been the commit's own fdatasync failing, the flush that
   * was to make the held commit's meta page durable: an EIO above all, and
   * ENOSPC or EDQUOT too (fsync(2) returns them for a failed write-back,
   * which the kernel reports once: a later sync would succeed over the
   * lost pages). A full disk while answers are held therefore restarts
   * engramd instead of failing writes until space is freed. */
  if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL || rc == ENOMEM) return;
  eg_store_flush_failed(s, e);
}

eg_err eg_store__flush(eg_store *s) {
  if (eg_store_broken(s)) return EG_EBROKEN;
  int rc = mdb_env_sync(s->env, 1);
  if (rc) return eg_store_flush_failed(s, eg_store__commit_err(s, rc));
  atomic_fetch_add_explicit(&s->flushes, 1, memory_order_relaxed);
  return EG_OK;
}

eg_err eg_store_sync(eg_store *s) {
  if (!s->defer_meta_sync || s->committed_lsn == eg_store_last_lsn(s)) return EG_OK;
  eg_err e = eg_store__flush(s);
  if (!e) eg_store_publish(s, s->committed_lsn);
  return e;
}

int eg_store_defers_meta_sync(const eg_store *s) { return s->defer_meta_sync; }

uint64_t eg_store_flushes(const eg_store *s) {
  return atomic_load_explicit(&s->flushes, memory_order_relaxed);
}

eg_err eg_store_write_commit(eg_txn *w, uint64_t *lsn) {
  assert(w && w->kind == EG_TXN_WRITE && !w->child);
  eg_store *s = w->s;
  uint64_t next = 0, epoch = 0;
  /* The commit waiting for a flush: this commit's makes it durable. */
  uint64_t pending = s->committed_lsn > eg_store_last_lsn(s) ? s->committed_lsn : 0;
  eg_err e = eg_usage__flush(w);
  if (!e) e = eg_txn_stamp(w, &next, &epoch);
  if (e) goto fail;
  int rc = mdb_txn_commit(w->txn);
  w->txn = NULL; /* gone, committed or not */
  e = rc ? eg_store__commit_failed(s, rc) : EG_OK;
  eg_store__disk_episode(s, e);
  if (e && pending) eg_store__unflushed_commit_failed(s, rc, e);
  if (e) goto fail;
  s->committed_lsn = next;
  atomic_fetch_add_explicit(&s->flushes, s->defer_meta_sync ? 1 : 2, memory_order_relaxed);
  atomic_store_explicit(&s->epoch, epoch, memory_order_release);
  if (w->erasure) atomic_store_explicit(&s->erase_floor, next, memory_order_release);
  if (w->limits_touched) atomic_fetch_add_explicit(&s->limits_gen, 1, memory_order_acq_rel);
  /* A flush of eg_store_meta_put's that failed since (another thread)
   * may have been the one that covered pending: it stays unpublished. */
  if (!s->defer_meta_sync)
    eg_store_publish(s, next);
  else if (pending && !eg_store_broken(s))
    eg_store_publish(s, pending);
  if (lsn) *lsn = next;
fail:
  if (w->txn) mdb_txn_abort(w->txn);
  eg_txn_free(w);
  return e;
}

void eg_store_write_abort(eg_txn *w) {
  if (!w) return;
  assert(w->kind == EG_TXN_WRITE);
  if (w->txn) mdb_txn_abort(w->txn);
  eg_txn_free(w);
}

/* ---- nested ------------------------------------------------------------- */

eg_err eg_store_sub_begin(eg_txn *parent, eg_txn **out) {
  if (!eg_txn_writable(parent)) return EG_EINVAL;
  eg_txn *sub = eg_txn_alloc(parent->s, EG_TXN_SUB);
  if (!sub) return EG_ENOMEM;
  int rc = mdb_txn_begin(parent->s->env, parent->txn, 0, &sub->txn);
  if (rc) {
    free(sub);
    return eg_store__err(rc);
  }
  sub->parent = parent;
  parent->child = sub;
  *out = sub;
  return EG_OK;
}

eg_err eg_store_sub_commit(eg_txn *sub) {
  assert(sub && sub->kind == EG_TXN_SUB && !sub->child);
  eg_txn *parent = sub->parent;
  size_t mark = parent->ops.len;
  /* Merges into the parent; nothing reaches the disk until write_commit. */
  eg_err e = eg_wal__merge(parent, sub);
  if (!e) e = eg_usage__reserve(parent, sub);
  int rc = e ? 0 : mdb_txn_commit(sub->txn);
  if (e) mdb_txn_abort(sub->txn);
  /* Usage joins the parent only once the sub's changes did. */
  if (!e && !rc) eg_usage__merge(parent, sub);
  /* Keep the log equal to the data: drop the ops of a failed commit. */
  if (e || rc) parent->ops.len = mark;
  parent->child = NULL;
  eg_txn_free(sub);
  return e ? e : eg_store__err(rc);
}

size_t eg_store_txn_log_bytes(const eg_txn *t) { return t->ops.len; }

void eg_store_sub_abort(eg_txn *sub) {
  if (!sub) return;
  assert(sub->kind == EG_TXN_SUB);
  mdb_txn_abort(sub->txn);
  sub->parent->child = NULL;
  eg_txn_free(sub);
}
