/* Named meta values: small values outside the record schema (the store id,
 * a key fingerprint), readable and writable at start before the writer
 * thread exists. */
#include <stdio.h>
#include <string.h>

#include "storage/internal.h"

/* Kept in the meta DB under this prefix, so a caller's name can never
 * overwrite the store's own meta keys (schema_version, last_lsn, ...). */
#define EG_META_NAMED_PREFIX "named:"

/* Writes the meta key of name into key; EG_EINVAL unless name is 1 to
 * EG_STORE_META_NAME_MAX printable ASCII characters. */
static eg_err eg_meta_named_key(const char *name, char *key, size_t cap) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > EG_STORE_META_NAME_MAX) return EG_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (name[i] <= ' ' || name[i] > '~') return EG_EINVAL;
  _Static_assert(sizeof EG_META_NAMED_PREFIX + EG_STORE_META_NAME_MAX < 128, "key room");
  if (snprintf(key, cap, "%s%s", EG_META_NAMED_PREFIX, name) >= (int)cap) return EG_EINVAL;
  return EG_OK;
}

eg_err eg_store__named_get(MDB_txn *txn, MDB_dbi meta, const char *name, void *buf, size_t cap,
                          size_t *len) {
  char key[128];
  eg_err e = eg_meta_named_key(name, key, sizeof key);
  if (e) return e;
  MDB_val k = {strlen(key), key}, v;
  e = eg_store__err(mdb_get(txn, meta, &k, &v));
  if (e) return e;
  *len = v.mv_size;
  if (v.mv_size > cap) return EG_ELIMIT;
  if (v.mv_size) memcpy(buf, v.mv_data, v.mv_size);
  return EG_OK;
}

eg_err eg_store__named_put(MDB_txn *txn, MDB_dbi meta, const char *name, const void *val,
                          size_t n) {
  char key[128];
  eg_err e = eg_meta_named_key(name, key, sizeof key);
  if (e) return e;
  if (n > EG_STORE_META_VALUE_MAX || (n && !val)) return EG_EINVAL;
  MDB_val k = {strlen(key), key}, v = {n, (void *)val};
  return eg_store__err(mdb_put(txn, meta, &k, &v, 0));
}

eg_err eg_store_meta_get(eg_store *s, const char *name, void *buf, size_t cap, size_t *len) {
  eg_txn *r = NULL;
  eg_err e = eg_store_reader_new(s, &r);
  if (!e) e = eg_store_reader_begin(r);
  if (!e) e = eg_store__named_get(r->txn, s->meta, name, buf, cap, len);
  eg_store_reader_free(r);
  return e;
}

/* How often a put adopts a map another process grew before giving up. */
#define EG_META_RESIZE_TRIES 3

eg_err eg_store_meta_put(eg_store *s, const char *name, const void *val, size_t n) {
  MDB_txn *txn = NULL;
  for (int tries = 0;; tries++) {
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc == MDB_SUCCESS) break;
    if (rc != MDB_MAP_RESIZED || tries == EG_META_RESIZE_TRIES)
      return eg_store__broken(s, eg_store__err(rc));
    eg_err e = eg_store__adopt_map_size(s);
    if (e) return e;
  }
  eg_err e = eg_store__named_put(txn, s->meta, name, val, n);
  if (e) {
    mdb_txn_abort(txn);
    return e;
  }
  /* Durable when it returns: the env syncs every commit's meta page, or
   * (defer_meta_sync) a flush after the commit does. */
  int rc = mdb_txn_commit(txn);
  /* The writer's last commit may have waited for this commit's flush
   * (assume it did: the writer is another thread). Marked broken before
   * eg_store__commit_failed's probe lets the writer commit: its flush would
   * return 0 (the kernel reports a failed write-back once) and its commit
   * would then answer the held writes. */
  if (rc && s->defer_meta_sync)
    eg_store__unflushed_commit_failed(s, rc, eg_store__commit_err(s, rc));
  e = rc ? eg_store__commit_failed(s, rc) : EG_OK;
  eg_store__disk_episode(s, e);
  if (!e && s->defer_meta_sync) e = eg_store__flush(s);
  return e;
}
