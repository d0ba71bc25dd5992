/* The key store's LMDB env: records, the by-version index, compaction. */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engram/storage/v1/keys.pb-c.h"
#include "storage/internal.h"
#include "storage/keystore.h"

#define EG_KS_DB_KEYS "keys"
#define EG_KS_DB_BY_VERSION "by_version"
#define EG_KS_DB_META "meta"
#define EG_KS_META_VERSION "version"
/* Where compaction builds the new file, inside the key store's dir (same
 * file system: the rename is atomic). */
#define EG_KS_COMPACT_DIR "compact.tmp"
/* Sparse: the file grows with the records (about 200 bytes a key, so a
 * million users' keys take some 400 MiB with the index). */
#define EG_KS_MAP_SIZE ((size_t)4 << 30)
/* Workers read keys missing from the cache, replication streams read
 * changes: more than the data store's per-worker reader never is. */
#define EG_KS_READERS 256
/* u8 len | tenant | u8 len | user | gen */
#define EG_KS_KEY_MAX (2 + 2 * EG_KEYSTORE_ID_MAX + 4)
#define EG_KS_PATH_MAX 4096

struct eg_keystore {
  MDB_env *env; /* NULL after a compaction failed to reopen it */
  MDB_dbi keys, by_version, meta;
  /* Read side: every call. Write side: compaction, which replaces the
   * env under them. */
  pthread_rwlock_t lock;
  _Atomic uint64_t version;
  int lock_fd; /* dir/LOCK, flock'd: one process per key store */
  char dir[EG_KS_PATH_MAX];
};

/* ---- keys and records ------------------------------------------------------ */

typedef struct {
  uint8_t buf[EG_KS_KEY_MAX];
  size_t len;
} eg_ks_key;

/* Appends u8 len | s. EG_EINVAL when s is longer than an id may be. */
static eg_err ks_key_part(eg_ks_key *k, const char *s) {
  size_t n = strlen(s);
  if (n > EG_KEYSTORE_ID_MAX) return EG_EINVAL;
  k->buf[k->len++] = (uint8_t)n;
  memcpy(k->buf + k->len, s, n);
  k->len += n;
  return EG_OK;
}

/* The prefix of tenant's rows (user NULL) or of one user's. */
static eg_err ks_key_prefix(eg_ks_key *k, const char *tenant, const char *user) {
  k->len = 0;
  eg_err e = ks_key_part(k, tenant);
  if (!e && user) e = ks_key_part(k, user);
  return e;
}

static eg_err ks_key_row(eg_ks_key *k, const char *tenant, const char *user, uint32_t gen) {
  eg_err e = ks_key_prefix(k, tenant, user);
  if (e) return e;
  eg_be32_put(k->buf + k->len, gen);
  k->len += 4;
  return EG_OK;
}

static eg_err ks_decode(const void *p, size_t n, eg_key_rec *rec) {
  Engram__Storage__V1__KeyRecord *m = engram__storage__v1__key_record__unpack(NULL, n, p);
  if (!m) return EG_ECORRUPT;
  eg_err e = EG_ECORRUPT;
  size_t tl = strlen(m->tenant), ul = strlen(m->user);
  if (tl > EG_KEYSTORE_ID_MAX || ul > EG_KEYSTORE_ID_MAX ||
      m->wrapped_key.len > EG_KEYSTORE_WRAPPED_MAX)
    goto out;
  memcpy(rec->tenant, m->tenant, tl + 1);
  memcpy(rec->user, m->user, ul + 1);
  rec->gen = m->generation;
  if (m->wrapped_key.len) memcpy(rec->wrapped, m->wrapped_key.data, m->wrapped_key.len);
  rec->wrapped_len = m->wrapped_key.len;
  rec->master_key_id = m->master_key_id;
  rec->create_time_us = m->create_time_us;
  rec->erase_time_us = m->erase_time_us;
  rec->version = m->version;
  e = EG_OK;
out:
  engram__storage__v1__key_record__free_unpacked(m, NULL);
  return e;
}

/* Puts rec (its version set) under its row key, packed straight into
 * LMDB's buffer. */
static int ks_put_rec(MDB_txn *txn, MDB_dbi dbi, const eg_ks_key *k, const eg_key_rec *rec) {
  Engram__Storage__V1__KeyRecord m = ENGRAM__STORAGE__V1__KEY_RECORD__INIT;
  m.tenant = (char *)rec->tenant;
  m.user = (char *)rec->user;
  m.generation = rec->gen;
  m.wrapped_key.data = (uint8_t *)rec->wrapped;
  m.wrapped_key.len = rec->wrapped_len;
  m.master_key_id = rec->master_key_id;
  m.create_time_us = rec->create_time_us;
  m.erase_time_us = rec->erase_time_us;
  m.version = rec->version;
  MDB_val key = {k->len, (void *)k->buf};
  MDB_val val = {protobuf_c_message_get_packed_size(&m.base), NULL};
  int rc = mdb_put(txn, dbi, &key, &val, MDB_RESERVE);
  if (!rc) protobuf_c_message_pack(&m.base, val.mv_data);
  return rc;
}

static int ks_put_version(MDB_txn *txn, MDB_dbi meta, uint64_t v) {
  uint8_t b[8];
  eg_be64_put(b, v);
  MDB_val k = {sizeof EG_KS_META_VERSION - 1, EG_KS_META_VERSION}, val = {8, b};
  return mdb_put(txn, meta, &k, &val, 0);
}

/* Points by_version at row k for version v, dropping the entry of the
 * version the row had (old, 0: none). */
static int ks_index(eg_keystore *ks, MDB_txn *txn, const eg_ks_key *k, uint64_t old, uint64_t v) {
  uint8_t b[8];
  MDB_val vk = {8, b}, row = {k->len, (void *)k->buf};
  if (old && old != v) {
    eg_be64_put(b, old);
    MDB_val cur;
    /* Only if it still names this row: an apply of another node's history
     * may have given that version to another row. */
    int rc = mdb_get(txn, ks->by_version, &vk, &cur);
    if (!rc && cur.mv_size == k->len && memcmp(cur.mv_data, k->buf, k->len) == 0)
      rc = mdb_del(txn, ks->by_version, &vk, NULL);
    if (rc && rc != MDB_NOTFOUND) return rc;
  }
  eg_be64_put(b, v);
  return mdb_put(txn, ks->by_version, &vk, &row, 0);
}

/* Before an applied row k takes version v in by_version: when v names
 * another row there (a version this store gave out, or applied from an
 * earlier primary's history), that row moves to version ++*top, so that
 * every row stays in by_version (a stream sends by_version's rows only). */
static int ks_renumber_holder(eg_keystore *ks, MDB_txn *txn, const eg_ks_key *k, uint64_t v,
                              uint64_t *top) {
  uint8_t b[8];
  eg_be64_put(b, v);
  MDB_val vk = {8, b}, holder, val;
  int rc = mdb_get(txn, ks->by_version, &vk, &holder);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc || (holder.mv_size == k->len && memcmp(holder.mv_data, k->buf, k->len) == 0)) return rc;
  eg_ks_key hk;
  eg_key_rec rec;
  if (holder.mv_size > sizeof hk.buf) return MDB_CORRUPTED;
  hk.len = holder.mv_size;
  memcpy(hk.buf, holder.mv_data, hk.len);
  MDB_val hkey = {hk.len, hk.buf};
  /* by_version names only rows that exist. */
  if ((rc = mdb_get(txn, ks->keys, &hkey, &val)) != 0)
    return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
  if (ks_decode(val.mv_data, val.mv_size, &rec) != EG_OK) return MDB_CORRUPTED;
  rec.version = ++*top;
  if ((rc = ks_put_rec(txn, ks->keys, &hk, &rec)) != 0) return rc;
  eg_be64_put(b, rec.version);
  vk = (MDB_val){8, b};
  return mdb_put(txn, ks->by_version, &vk, &hkey, 0);
}

/* ---- open / close ----------------------------------------------------------- */

/* dir/name into out; open checked that every name fits (else "",
 * which no call below can use). */
static void ks_path(char *out, size_t n, const char *dir, const char *name) {
  if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n) out[0] = '\0';
}

/* Opens env in dir and its DBs (creating them) into ks. */
static int ks_open_dbs(eg_keystore *ks, MDB_txn *txn, unsigned flags) {
  int rc = mdb_dbi_open(txn, EG_KS_DB_KEYS, flags, &ks->keys);
  if (!rc) rc = mdb_dbi_open(txn, EG_KS_DB_BY_VERSION, flags, &ks->by_version);
  if (!rc) rc = mdb_dbi_open(txn, EG_KS_DB_META, flags, &ks->meta);
  return rc;
}

static eg_err ks_open_env(eg_keystore *ks, const char *dir, char *err, size_t errlen) {
  MDB_txn *txn = NULL;
  int rc = mdb_env_create(&ks->env);
  if (!rc) rc = mdb_env_set_maxdbs(ks->env, 3);
  if (!rc) rc = mdb_env_set_maxreaders(ks->env, EG_KS_READERS);
  if (!rc) rc = mdb_env_set_mapsize(ks->env, EG_KS_MAP_SIZE);
  /* MDB_NOTLS: txns begin and end on any worker thread. Durable commits
   * (no MDB_NOSYNC): a key is on disk before data is sealed with it. */
  if (!rc) rc = mdb_env_open(ks->env, dir, MDB_NOTLS, 0600);
  /* The DBs are looked up in a read txn when they exist (every open but
   * the first, and the reopen after a compaction): nothing is written, so
   * no failed commit can leave the key store closed. */
  if (!rc) rc = mdb_txn_begin(ks->env, NULL, MDB_RDONLY, &txn);
  if (!rc) rc = ks_open_dbs(ks, txn, 0);
  if (rc == MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    txn = NULL;
    rc = mdb_txn_begin(ks->env, NULL, 0, &txn);
    if (!rc) rc = ks_open_dbs(ks, txn, MDB_CREATE);
  }
  uint64_t v = 0;
  eg_err e = rc ? eg_store__err(rc) : eg_store__meta_get_u64(txn, ks->meta, EG_KS_META_VERSION, &v);
  if (!e) e = eg_store__err(mdb_txn_commit(txn));
  else if (txn) mdb_txn_abort(txn);
  if (e) {
    snprintf(err, errlen, "key store %s/data.mdb: %s", dir,
             rc ? mdb_strerror(rc) : eg_err_msg(e));
    mdb_env_close(ks->env);
    ks->env = NULL;
    return rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ? EG_ECORRUPT : e;
  }
  atomic_store(&ks->version, v);
  return EG_OK;
}

eg_err eg_keystore_open(const char *dir, eg_keystore **out, char *err, size_t errlen) {
  char path[EG_KS_PATH_MAX];
  if (strlen(dir) + sizeof "/" EG_KS_COMPACT_DIR "/data.mdb" > EG_KS_PATH_MAX) {
    snprintf(err, errlen, "key store path too long (%zu bytes)", strlen(dir));
    return EG_EINVAL;
  }
  eg_keystore *ks = calloc(1, sizeof *ks);
  if (!ks) return EG_ENOMEM;
  snprintf(ks->dir, sizeof ks->dir, "%s", dir);
  /* Writer-preferring, as the data store's map lock: a steady stream of
   * key reads must not starve a compaction (which an erasure waits for).
   * No thread takes the read side twice. */
  pthread_rwlockattr_t attr;
  int rc = pthread_rwlockattr_init(&attr);
  if (!rc) pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  if (!rc) rc = pthread_rwlock_init(&ks->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  if (rc) {
    free(ks);
    return EG_ENOMEM;
  }
  /* Made 0700 (or tightened) and locked: two engramds given one
   * --key-store would compact it under each other. */
  eg_err e = eg_store_lock_dir(dir, &ks->lock_fd, err, errlen);
  if (e) {
    pthread_rwlock_destroy(&ks->lock);
    free(ks);
    return e;
  }
  /* A compaction that died midway left its new file here: the old one,
   * still in place, is the store. */
  ks_path(path, sizeof path, dir, EG_KS_COMPACT_DIR "/data.mdb");
  unlink(path);
  ks_path(path, sizeof path, dir, EG_KS_COMPACT_DIR "/lock.mdb");
  unlink(path);
  ks_path(path, sizeof path, dir, EG_KS_COMPACT_DIR);
  rmdir(path);
  e = ks_open_env(ks, dir, err, errlen);
  /* A file restored from a backup may have come with a looser mode. */
  ks_path(path, sizeof path, dir, "data.mdb");
  if (!e && chmod(path, 0600) != 0) {
    snprintf(err, errlen, "%s: chmod 0600: %s", path, strerror(errno));
    e = EG_EIO;
  }
  if (e) {
    eg_keystore_close(ks);
    return e;
  }
  *out = ks;
  return EG_OK;
}

void eg_keystore_close(eg_keystore *ks) {
  if (!ks) return;
  if (ks->env) mdb_env_close(ks->env);
  eg_store_unlock_dir(ks->lock_fd);
  pthread_rwlock_destroy(&ks->lock);
  free(ks);
}

uint64_t eg_keystore_version(eg_keystore *ks) { return atomic_load(&ks->version); }

/* Begins a txn with the read side of ks->lock held; ks_end ends both. */
static eg_err ks_begin(eg_keystore *ks, unsigned flags, MDB_txn **txn) {
  pthread_rwlock_rdlock(&ks->lock);
  int rc = ks->env ? mdb_txn_begin(ks->env, NULL, flags, txn) : EIO;
  if (rc) pthread_rwlock_unlock(&ks->lock);
  return eg_store__err(rc);
}

/* Commits (rc 0) or aborts txn, then lets compaction in. */
static eg_err ks_end(eg_keystore *ks, MDB_txn *txn, int rc) {
  if (rc) mdb_txn_abort(txn);
  else rc = mdb_txn_commit(txn);
  pthread_rwlock_unlock(&ks->lock);
  return eg_store__err(rc);
}

/* ---- reads -------------------------------------------------------------------- */

eg_err eg_keystore_get(eg_keystore *ks, const char *tenant, const char *user, uint32_t gen,
                       eg_key_rec *rec) {
  eg_ks_key k;
  MDB_txn *txn;
  eg_err e = ks_key_row(&k, tenant, user, gen);
  if (e || (e = ks_begin(ks, MDB_RDONLY, &txn))) return e;
  MDB_val key = {k.len, k.buf}, val;
  int rc = mdb_get(txn, ks->keys, &key, &val);
  if (!rc) e = ks_decode(val.mv_data, val.mv_size, rec);
  ks_end(ks, txn, 1);
  return rc ? eg_store__err(rc) : e;
}

eg_err eg_keystore_latest(eg_keystore *ks, const char *tenant, const char *user,
                          eg_key_rec *rec) {
  eg_ks_key k, prefix;
  MDB_txn *txn;
  MDB_cursor *c = NULL;
  eg_err e = ks_key_prefix(&prefix, tenant, user);
  if (!e) e = ks_key_row(&k, tenant, user, UINT32_MAX);
  if (e || (e = ks_begin(ks, MDB_RDONLY, &txn))) return e;
  MDB_val key = {k.len, k.buf}, val;
  int rc = mdb_cursor_open(txn, ks->keys, &c);
  /* The row after the highest possible generation, then one back. */
  if (!rc) {
    rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) rc = mdb_cursor_get(c, &key, &val, MDB_LAST);
    else if (!rc && !(key.mv_size == k.len && memcmp(key.mv_data, k.buf, k.len) == 0))
      rc = mdb_cursor_get(c, &key, &val, MDB_PREV);
  }
  if (!rc && !(key.mv_size == prefix.len + 4 && memcmp(key.mv_data, prefix.buf, prefix.len) == 0))
    rc = MDB_NOTFOUND;
  if (!rc) e = ks_decode(val.mv_data, val.mv_size, rec);
  mdb_cursor_close(c);
  ks_end(ks, txn, 1);
  return rc ? eg_store__err(rc) : e;
}

int eg_keystore_scan(eg_keystore *ks, const char *tenant, const char *user,
                     const eg_key_rec *after, eg_key_rec_fn fn, void *arg) {
  eg_ks_key prefix = {.len = 0}, start;
  MDB_txn *txn;
  MDB_cursor *c = NULL;
  eg_key_rec rec;
  eg_err e = tenant ? ks_key_prefix(&prefix, tenant, user) : EG_OK;
  if (!e && after) e = ks_key_row(&start, after->tenant, after->user, after->gen);
  if (e || (e = ks_begin(ks, MDB_RDONLY, &txn))) return -(int)e;
  /* From the row after `after` if given, else from the prefix. */
  MDB_val key = after ? (MDB_val){start.len, start.buf} : (MDB_val){prefix.len, prefix.buf}, val;
  int stop = 0;
  int rc = mdb_cursor_open(txn, ks->keys, &c);
  if (!rc) rc = mdb_cursor_get(c, &key, &val, key.mv_size ? MDB_SET_RANGE : MDB_FIRST);
  if (!rc && after && key.mv_size == start.len && memcmp(key.mv_data, start.buf, start.len) == 0)
    rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
  while (!rc && !stop) {
    if (key.mv_size < prefix.len || memcmp(key.mv_data, prefix.buf, prefix.len) != 0) break;
    if ((e = ks_decode(val.mv_data, val.mv_size, &rec)) != EG_OK) break;
    stop = fn(arg, &rec);
    if (!stop) rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
  }
  mdb_cursor_close(c);
  ks_end(ks, txn, 1);
  if (stop) return stop;
  if (!e && rc && rc != MDB_NOTFOUND) e = eg_store__err(rc);
  return -(int)e;
}

eg_err eg_keystore_changes(eg_keystore *ks, uint64_t since, size_t max, eg_key_bytes_fn fn,
                           void *arg, uint64_t *last) {
  MDB_txn *txn;
  MDB_cursor *c = NULL;
  uint8_t b[8];
  *last = since;
  if (since == UINT64_MAX) return EG_OK;
  eg_be64_put(b, since + 1);
  eg_err e = ks_begin(ks, MDB_RDONLY, &txn);
  if (e) return e;
  MDB_val key = {8, b}, row, val;
  size_t n = 0;
  int rc = mdb_cursor_open(txn, ks->by_version, &c);
  if (!rc) rc = mdb_cursor_get(c, &key, &row, MDB_SET_RANGE);
  while (!rc && !e && n < max) {
    if (key.mv_size != 8) {
      e = EG_ECORRUPT;
      break;
    }
    uint64_t v = eg_be64_get(key.mv_data);
    if ((rc = mdb_get(txn, ks->keys, &row, &val)) != 0) {
      /* Every by_version entry names a row that exists. */
      if (rc == MDB_NOTFOUND) e = EG_ECORRUPT;
      break;
    }
    if ((e = fn(arg, v, val.mv_data, val.mv_size)) != EG_OK) break;
    *last = v;
    n++;
    rc = mdb_cursor_get(c, &key, &row, MDB_NEXT);
  }
  mdb_cursor_close(c);
  ks_end(ks, txn, 1);
  if (!e && rc && rc != MDB_NOTFOUND) e = eg_store__err(rc);
  return e;
}

/* ---- writes ------------------------------------------------------------------- */

eg_err eg_keystore_put(eg_keystore *ks, eg_key_rec *recs, size_t n) {
  MDB_txn *txn;
  eg_ks_key k;
  for (size_t i = 0; i < n; i++)
    if (ks_key_row(&k, recs[i].tenant, recs[i].user, recs[i].gen) != EG_OK ||
        recs[i].wrapped_len > EG_KEYSTORE_WRAPPED_MAX)
      return EG_EINVAL;
  eg_err e = ks_begin(ks, 0, &txn);
  if (e) return e;
  uint64_t v = 0;
  int rc = 0;
  e = eg_store__meta_get_u64(txn, ks->meta, EG_KS_META_VERSION, &v);
  for (size_t i = 0; i < n && !e && !rc; i++) {
    eg_key_rec old;
    ks_key_row(&k, recs[i].tenant, recs[i].user, recs[i].gen);
    MDB_val key = {k.len, k.buf}, val;
    rc = mdb_get(txn, ks->keys, &key, &val);
    old.version = 0;
    if (!rc) e = ks_decode(val.mv_data, val.mv_size, &old);
    if (rc == MDB_NOTFOUND) rc = 0;
    recs[i].version = ++v;
    if (!rc && !e) rc = ks_put_rec(txn, ks->keys, &k, &recs[i]);
    if (!rc && !e) rc = ks_index(ks, txn, &k, old.version, v);
  }
  if (!rc && !e) rc = ks_put_version(txn, ks->meta, v);
  if (e) rc = EIO; /* abort */
  eg_err ce = ks_end(ks, txn, rc);
  if (e) return e;
  if (!ce) atomic_store(&ks->version, v);
  return ce;
}

eg_err eg_keystore_apply(eg_keystore *ks, const eg_key_change *ch, size_t n,
                         void (*on_stored)(void *arg, const eg_key_rec *rec), void *arg,
                         uint64_t *replaced) {
  MDB_txn *txn;
  eg_ks_key k;
  eg_key_rec *recs = malloc((n ? n : 1) * sizeof *recs);
  uint8_t *stored = calloc(n ? n : 1, 1);
  eg_err e = recs && stored ? EG_OK : EG_ENOMEM;
  *replaced = 0;
  /* Decoded before the txn: a bad record stores none of the batch. */
  for (size_t i = 0; i < n && !e; i++) {
    e = ks_decode(ch[i].rec, ch[i].len, &recs[i]);
    if (!e && recs[i].version != ch[i].version) e = EG_ECORRUPT;
  }
  if (!e && n) e = ks_begin(ks, 0, &txn);
  if (e || !n) {
    free(recs);
    free(stored);
    return e;
  }
  /* The store's version only goes up (a failover's new primary may number
   * below this one's): top is the highest version given out so far,
   * those of the batch included, and the next one a re-numbered row takes. */
  uint64_t top = 0;
  e = eg_store__meta_get_u64(txn, ks->meta, EG_KS_META_VERSION, &top);
  for (size_t i = 0; i < n; i++)
    if (ch[i].version > top) top = ch[i].version;
  int rc = 0;
  for (size_t i = 0; i < n && !e && !rc; i++) {
    eg_key_rec old;
    ks_key_row(&k, recs[i].tenant, recs[i].user, recs[i].gen);
    MDB_val key = {k.len, k.buf}, val;
    rc = mdb_get(txn, ks->keys, &key, &val);
    int had = rc == 0;
    if (had) e = ks_decode(val.mv_data, val.mv_size, &old);
    if (rc == MDB_NOTFOUND) rc = 0;
    if (rc || e) break;
    if (had && old.wrapped_len == 0 && recs[i].wrapped_len > 0) continue; /* never resurrected */
    /* A tombstone, or a re-wrap (other wrapped bytes of the same key):
     * the old wrapping leaves the file by a compaction. */
    if (had && old.wrapped_len > 0 &&
        (old.wrapped_len != recs[i].wrapped_len ||
         memcmp(old.wrapped, recs[i].wrapped, old.wrapped_len) != 0))
      ++*replaced;
    MDB_val in = {ch[i].len, (void *)ch[i].rec};
    rc = mdb_put(txn, ks->keys, &key, &in, 0);
    if (!rc) rc = ks_renumber_holder(ks, txn, &k, recs[i].version, &top);
    if (!rc) rc = ks_index(ks, txn, &k, had ? old.version : 0, recs[i].version);
    stored[i] = 1;
  }
  if (!rc && !e) rc = ks_put_version(txn, ks->meta, top);
  if (e) rc = EIO;
  eg_err ce = ks_end(ks, txn, rc);
  if (!e && !ce) {
    atomic_store(&ks->version, top);
    for (size_t i = 0; i < n && on_stored; i++)
      if (stored[i]) on_stored(arg, &recs[i]);
  }
  free(recs);
  free(stored);
  return e ? e : ce;
}

/* ---- compaction and copies ----------------------------------------------------- */

static int ks_fsync_path(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* Copies every row of DB name from src into a new env's dst txn, in key
 * order (MDB_APPEND: pages filled in order, nothing shifted). */
static int ks_copy_db(MDB_txn *src, MDB_txn *dst, const char *name) {
  MDB_dbi from, to;
  MDB_cursor *c = NULL;
  MDB_val k, v;
  int rc = mdb_dbi_open(src, name, 0, &from);
  if (!rc) rc = mdb_dbi_open(dst, name, MDB_CREATE, &to);
  if (!rc) rc = mdb_cursor_open(src, from, &c);
  if (!rc) rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  while (!rc) {
    rc = mdb_put(dst, to, &k, &v, MDB_APPEND);
    if (!rc) rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(c);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Writes the records of ks's env into a new env in tmpdir, synced. */
static int ks_rebuild(eg_keystore *ks, const char *tmpdir) {
  MDB_env *env = NULL;
  MDB_txn *src = NULL, *dst = NULL;
  static const char *const dbs[] = {EG_KS_DB_KEYS, EG_KS_DB_BY_VERSION, EG_KS_DB_META};
  if (mkdir(tmpdir, 0700) != 0) return errno;
  int rc = mdb_env_create(&env);
  if (!rc) rc = mdb_env_set_maxdbs(env, 3);
  if (!rc) rc = mdb_env_set_mapsize(env, EG_KS_MAP_SIZE);
  if (!rc) rc = mdb_env_open(env, tmpdir, MDB_NOTLS, 0600);
  if (!rc) rc = mdb_txn_begin(ks->env, NULL, MDB_RDONLY, &src);
  if (!rc) rc = mdb_txn_begin(env, NULL, 0, &dst);
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0] && !rc; i++)
    rc = ks_copy_db(src, dst, dbs[i]);
  if (src) mdb_txn_abort(src);
  if (!rc) rc = mdb_txn_commit(dst);
  else if (dst) mdb_txn_abort(dst);
  if (!rc) rc = mdb_env_sync(env, 1);
  if (env) mdb_env_close(env);
  return rc;
}

eg_err eg_keystore_compact(eg_keystore *ks, char *err, size_t errlen) {
  char tmpdir[EG_KS_PATH_MAX], tmpdata[EG_KS_PATH_MAX], tmplock[EG_KS_PATH_MAX],
      data[EG_KS_PATH_MAX];
  ks_path(tmpdir, sizeof tmpdir, ks->dir, EG_KS_COMPACT_DIR);
  ks_path(tmpdata, sizeof tmpdata, ks->dir, EG_KS_COMPACT_DIR "/data.mdb");
  ks_path(tmplock, sizeof tmplock, ks->dir, EG_KS_COMPACT_DIR "/lock.mdb");
  ks_path(data, sizeof data, ks->dir, "data.mdb");
  pthread_rwlock_wrlock(&ks->lock);
  if (!ks->env) {
    pthread_rwlock_unlock(&ks->lock);
    snprintf(err, errlen, "key store %s is closed after a failed compaction", ks->dir);
    return EG_EIO;
  }
  const char *step = "rebuild";
  int rc = ks_rebuild(ks, tmpdir);
  if (!rc && ks_fsync_path(tmpdata, O_RDONLY) != 0) rc = errno, step = "fsync";
  if (!rc) {
    /* No txn is live (the write lock): the old env goes, the new file
     * takes its name, and the env is opened on it. */
    mdb_env_close(ks->env);
    ks->env = NULL;
    if (rename(tmpdata, data) != 0) rc = errno, step = "rename";
    else if (ks_fsync_path(ks->dir, O_RDONLY | O_DIRECTORY) != 0) rc = errno, step = "fsync dir";
  }
  unlink(tmpdata);
  unlink(tmplock);
  rmdir(tmpdir);
  if (rc) snprintf(err, errlen, "key store %s: compaction (%s): %s", ks->dir, step,
                   mdb_strerror(rc));
  eg_err e = rc ? eg_store__err(rc) : EG_OK;
  if (!ks->env) {
    char why[256];
    eg_err oe = ks_open_env(ks, ks->dir, why, sizeof why);
    if (oe) {
      snprintf(err, errlen, "key store %s: reopening after compaction: %s", ks->dir, why);
      e = oe;
    }
  }
  pthread_rwlock_unlock(&ks->lock);
  return e;
}

eg_err eg_keystore_copy(eg_keystore *ks, int fd) {
  pthread_rwlock_rdlock(&ks->lock);
  int rc = ks->env ? mdb_env_copyfd2(ks->env, fd, MDB_CP_COMPACT) : EIO;
  pthread_rwlock_unlock(&ks->lock);
  return eg_store__err(rc);
}
