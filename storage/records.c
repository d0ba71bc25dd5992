/* Record values (protobuf-c) in and out of LMDB, and the cursor moves the
 * range reads and deletes share. */
#include <errno.h>
#include <string.h>

#include "storage/internal.h"

eg_err eg_store__err(int rc) {
  switch (rc) {
    case MDB_SUCCESS: return EG_OK;
    case MDB_NOTFOUND: return EG_ENOTFOUND;
    case MDB_MAP_FULL: return EG_EMAPFULL;
    case MDB_READERS_FULL: return EG_EREADERS;
    case MDB_TXN_FULL: return EG_ETXNFULL;
    /* LMDB gave up on the env (a failed write of a meta page): no txn of
     * this process can work again; the file itself is consistent. */
    case MDB_PANIC: return EG_EBROKEN;
    /* A bad page pointer or page header: the file, not the call, is bad. */
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND: return EG_ECORRUPT;
    case ENOMEM: return EG_ENOMEM;
    /* Out of space or over a disk quota: the same for the client, who
     * can do nothing but wait. */
    case ENOSPC:
    case EDQUOT: return EG_ENOSPC;
    default: return EG_EIO;
  }
}

eg_err eg_store__put_msg(eg_txn *t, MDB_dbi dbi, const eg_key *k, const ProtobufCMessage *m,
                         unsigned flags) {
  MDB_val key = {k->len, (void *)k->buf};
  MDB_val val = {protobuf_c_message_get_packed_size(m), NULL};
  /* MDB_RESERVE hands back LMDB's own buffer: pack into it, no copy. */
  eg_err e = eg_usage__put(t, dbi, &key, &val, flags | MDB_RESERVE);
  if (e) return e;
  protobuf_c_message_pack(m, val.mv_data);
  return eg_wal__log(t, dbi, EG_WAL_PUT, k, val.mv_data, val.mv_size);
}

eg_err eg_store__put(eg_txn *t, MDB_dbi dbi, const eg_key *k, const void *v, size_t n) {
  MDB_val key = {k->len, (void *)k->buf}, val = {n, (void *)v};
  eg_err e = eg_usage__put(t, dbi, &key, &val, 0);
  return e ? e : eg_wal__log(t, dbi, EG_WAL_PUT, k, v, n);
}

eg_err eg_store__del(eg_txn *t, MDB_dbi dbi, const eg_key *k) {
  MDB_val key = {k->len, (void *)k->buf};
  eg_err e = eg_usage__del(t, dbi, &key);
  return e ? e : eg_wal__log(t, dbi, EG_WAL_DEL, k, NULL, 0);
}

eg_err eg_store__del_quiet(eg_txn *t, MDB_dbi dbi, const eg_key *k) {
  eg_err e = eg_store__del(t, dbi, k);
  return e == EG_ENOTFOUND ? EG_OK : e;
}

int eg_store__u64_ascending(const uint64_t *a, size_t n) {
  for (size_t i = 1; i < n; i++)
    if (a[i - 1] >= a[i]) return 0;
  return 1;
}

eg_err eg_store__decode(const ProtobufCMessageDescriptor *desc, const MDB_val *v,
                        ProtobufCMessage **out) {
  /* protobuf-c cannot tell a bad encoding from a failed malloc; a bad
   * encoding is by far the likelier, and either way the record is lost to
   * this request. */
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, v->mv_size, v->mv_data);
  if (!m) return EG_ECORRUPT;
  *out = m;
  return EG_OK;
}

eg_err eg_store__get_msg(MDB_txn *txn, MDB_dbi dbi, const eg_key *k,
                         const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out) {
  MDB_val key = {k->len, (void *)k->buf}, val;
  int rc = mdb_get(txn, dbi, &key, &val);
  if (rc) return eg_store__err(rc);
  return eg_store__decode(desc, &val, out);
}

int eg_store__seek_at(MDB_cursor *c, const eg_key *seek, MDB_val *k, MDB_val *v) {
  *k = (MDB_val){seek->len, (void *)seek->buf};
  return mdb_cursor_get(c, k, v, MDB_SET_RANGE);
}

int eg_store__seek_below(MDB_cursor *c, const eg_key *seek, int inclusive, MDB_val *k,
                         MDB_val *v) {
  int rc = eg_store__seek_at(c, seek, k, v);
  /* Nothing at or after seek: the answer is the last key of the DB. */
  if (rc == MDB_NOTFOUND) return mdb_cursor_get(c, k, v, MDB_LAST);
  if (rc) return rc;
  if (inclusive && k->mv_size == seek->len && memcmp(k->mv_data, seek->buf, seek->len) == 0)
    return MDB_SUCCESS;
  return mdb_cursor_get(c, k, v, MDB_PREV);
}

/* Deletes dbi's keys under prefix in txn, counting them into *n and, when
 * counted is not NULL, their bytes as usage of counted (a logged delete). */
static eg_err eg_del_prefix(MDB_txn *txn, MDB_dbi dbi, const eg_key *prefix, uint64_t *n,
                            eg_txn *counted) {
  MDB_cursor *c = NULL;
  uint64_t count = 0;
  eg_err e = EG_OK;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (rc) goto fail;
  MDB_val k, v;
  rc = eg_store__seek_at(c, prefix, &k, &v);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, prefix)) {
    int64_t bytes = (int64_t)(k.mv_size + v.mv_size);
    if (counted && (e = eg_usage__count(counted, dbi, k.mv_data, k.mv_size, -bytes))) goto fail;
    rc = mdb_cursor_del(c, 0);
    if (rc) goto fail;
    count++;
    /* After a del the cursor already stands on the next key; MDB_NEXT
     * returns that one rather than skipping it. */
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
fail:
  if (c) mdb_cursor_close(c);
  if (!rc && !e && n) *n = count;
  return e ? e : eg_store__err(rc);
}

eg_err eg_store__del_prefix(eg_txn *t, MDB_dbi dbi, const eg_key *prefix, uint64_t *n) {
  uint64_t count = 0;
  eg_err e = eg_del_prefix(t->txn, dbi, prefix, &count, t);
  /* One op for the whole range: the replica holds the same keys at this
   * point of the log, so deleting the prefix there deletes the same ones. */
  if (!e && count) e = eg_wal__log(t, dbi, EG_WAL_DEL_PREFIX, prefix, NULL, 0);
  if (!e && n) *n = count;
  return e;
}

eg_err eg_store__del_prefix_raw(MDB_txn *txn, MDB_dbi dbi, const eg_key *prefix, uint64_t *n) {
  return eg_del_prefix(txn, dbi, prefix, n, NULL);
}
