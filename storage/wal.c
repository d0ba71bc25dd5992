/*
 * The write-ahead log. Each write txn collects its changes as encoded
 * WalOp entries (proto/engram/storage/v1/wal.proto); the commit stores one
 * WalRecord under its LSN in the `wal` DB, inside the same LMDB txn as the
 * data, so the log and the data can never disagree and cost one fsync.
 * Encoding by hand keeps the hot path free of per-op allocations; replicas
 * decode with the generated protobuf-c code.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "engram/storage/v1/wal.pb-c.h"
#include "storage/internal.h"

/* Protobuf wire tags: (field << 3) | wire type. */
#define EG_TAG_VARINT(f) ((uint8_t)((f) << 3))
#define EG_TAG_LEN(f) ((uint8_t)((f) << 3 | 2))

static size_t eg_varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, n++;
  return n;
}

static uint8_t *eg_varint_put(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

static uint8_t *eg_bytes_put(uint8_t *p, uint8_t tag, const void *b, size_t n) {
  *p++ = tag;
  p = eg_varint_put(p, n);
  memcpy(p, b, n);
  return p + n;
}

static size_t eg_bytes_len(size_t n) { return 1 + eg_varint_len(n) + n; }

static eg_err eg_buf_reserve(eg_wal_buf *b, size_t more) {
  if (b->cap - b->len >= more) return EG_OK;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < more) cap *= 2;
  uint8_t *nb = realloc(b->buf, cap);
  if (!nb) return EG_ENOMEM;
  b->buf = nb;
  b->cap = cap;
  return EG_OK;
}

void eg_wal__buf_free(eg_wal_buf *b) {
  free(b->buf);
  *b = (eg_wal_buf){0};
}

/* A WalOp's encoded length, without its own tag and length. */
static size_t eg_op_inner_len(size_t name_len, enum eg_wal_kind kind, size_t key_len,
                              size_t val_len) {
  return eg_bytes_len(name_len) + (kind ? 2 : 0) + eg_bytes_len(key_len) +
         (kind == EG_WAL_PUT ? eg_bytes_len(val_len) : 0);
}

size_t eg_wal__put_len(const eg_store *s, MDB_dbi dbi, size_t key_len, size_t val_len) {
  const char *name = eg_store__db_name(s, dbi);
  return eg_bytes_len(eg_op_inner_len(name ? strlen(name) : 0, EG_WAL_PUT, key_len, val_len));
}

eg_err eg_wal__log(eg_txn *t, MDB_dbi dbi, enum eg_wal_kind kind, const eg_key *k,
                   const void *v, size_t n) {
  if (dbi == t->s->tenant_limits) t->limits_touched = 1;
  if (t->unlogged) return EG_OK;
  const char *name = eg_store__db_name(t->s, dbi);
  assert(name); /* only data DBs are logged */
  if (!name) return EG_EIO;
  size_t nl = strlen(name);
  size_t inner = eg_op_inner_len(nl, kind, k->len, n);
  eg_err e = eg_buf_reserve(&t->ops, eg_bytes_len(inner));
  if (e) return e;
  uint8_t *p = t->ops.buf + t->ops.len;
  *p++ = EG_TAG_LEN(4); /* WalRecord.ops */
  p = eg_varint_put(p, inner);
  p = eg_bytes_put(p, EG_TAG_LEN(1), name, nl);
  if (kind) {
    *p++ = EG_TAG_VARINT(2);
    *p++ = (uint8_t)kind;
  }
  p = eg_bytes_put(p, EG_TAG_LEN(3), k->buf, k->len);
  if (kind == EG_WAL_PUT) p = eg_bytes_put(p, EG_TAG_LEN(4), v ? v : "", n);
  t->ops.len = (size_t)(p - t->ops.buf);
  return EG_OK;
}

eg_err eg_wal__merge(eg_txn *parent, eg_txn *child) {
  eg_err e = eg_buf_reserve(&parent->ops, child->ops.len);
  if (!e && child->ops.len) {
    memcpy(parent->ops.buf + parent->ops.len, child->ops.buf, child->ops.len);
    parent->ops.len += child->ops.len;
  }
  eg_wal__buf_free(&child->ops);
  if (!e) parent->erasure |= child->erasure;
  return e;
}

static eg_key eg_wal_key(uint64_t lsn) {
  eg_key k;
  eg_be64_put(k.buf, lsn);
  k.len = 8;
  return k;
}

eg_err eg_wal__append(eg_txn *w, uint64_t lsn, uint64_t epoch) {
  uint8_t head[5 + 3 * 10];
  uint8_t *p = head;
  *p++ = EG_TAG_VARINT(1);
  p = eg_varint_put(p, lsn);
  *p++ = EG_TAG_VARINT(2);
  p = eg_varint_put(p, epoch);
  *p++ = EG_TAG_VARINT(3);
  p = eg_varint_put(p, (uint64_t)eg_now_us());
  if (w->erasure) {
    *p++ = EG_TAG_VARINT(5);
    *p++ = 1;
  }
  size_t hl = (size_t)(p - head);
  eg_key k = eg_wal_key(lsn);
  MDB_val key = {k.len, k.buf}, val = {hl + w->ops.len, NULL};
  int rc = mdb_put(w->txn, w->s->wal, &key, &val, MDB_RESERVE | MDB_APPEND);
  if (rc) return eg_store__err(rc);
  memcpy(val.mv_data, head, hl);
  if (w->ops.len) memcpy((uint8_t *)val.mv_data + hl, w->ops.buf, w->ops.len);
  return EG_OK;
}

/* ==== public: replicas, streaming, retention ================================ */

/* Applies one op without logging it: the record is stored verbatim. */
static eg_err eg_wal_apply_op(eg_txn *w, const Engram__Storage__V1__WalOp *op) {
  MDB_dbi dbi;
  eg_err e = eg_store__db_by_name(w->s, op->db, &dbi);
  if (e) return e;
  if (op->key.len == 0 || op->key.len > EG_KEY_MAX) return EG_ECORRUPT;
  if (dbi == w->s->tenant_limits) w->limits_touched = 1;
  MDB_val key = {op->key.len, op->key.data}, val = {op->value.len, op->value.data};
  switch (op->kind) {
    case ENGRAM__STORAGE__V1__WAL_OP__KIND__PUT:
      return eg_store__err(mdb_put(w->txn, dbi, &key, &val, 0));
    case ENGRAM__STORAGE__V1__WAL_OP__KIND__DEL: {
      int rc = mdb_del(w->txn, dbi, &key, NULL);
      return eg_store__err(rc == MDB_NOTFOUND ? 0 : rc);
    }
    case ENGRAM__STORAGE__V1__WAL_OP__KIND__DEL_PREFIX: {
      eg_key prefix;
      memcpy(prefix.buf, op->key.data, op->key.len);
      prefix.len = op->key.len;
      return eg_store__del_prefix_raw(w->txn, dbi, &prefix, NULL);
    }
    default:
      return EG_ECORRUPT;
  }
}

eg_err eg_store_wal_apply(eg_txn *w, const uint8_t *rec, size_t len) {
  if (!w || w->kind != EG_TXN_WRITE || w->child || w->ops.len) return EG_EINVAL;
  /* The last commit, durable or not (the writer's own view). */
  uint64_t expect = (w->applied_lsn ? w->applied_lsn : w->s->committed_lsn) + 1;
  uint64_t floor = w->applied_epoch ? w->applied_epoch : eg_store_epoch(w->s);
  Engram__Storage__V1__WalRecord *r = engram__storage__v1__wal_record__unpack(NULL, len, rec);
  if (!r) return EG_ECORRUPT;
  eg_err e = EG_OK;
  /* In order, no gap, no repeat; never from an older epoch (fencing). */
  if (r->lsn != expect || r->epoch < floor) {
    e = EG_EPRECOND;
    goto out;
  }
  for (size_t i = 0; i < r->n_ops && !e; i++) e = eg_wal_apply_op(w, r->ops[i]);
  if (e) goto out;
  eg_key k = eg_wal_key(r->lsn);
  MDB_val key = {k.len, k.buf}, val = {len, (void *)rec};
  e = eg_store__err(mdb_put(w->txn, w->s->wal, &key, &val, MDB_APPEND));
  if (e) goto out;
  w->applied_lsn = r->lsn;
  w->applied_epoch = r->epoch;
  w->erasure |= r->erasure;
out:
  engram__storage__v1__wal_record__free_unpacked(r, NULL);
  return e;
}

eg_err eg_store_wal_scan(eg_txn *t, uint64_t from_lsn, eg_wal_visit_fn fn, void *arg) {
  MDB_cursor *c = NULL;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_key k = eg_wal_key(from_lsn);
  MDB_val key = {k.len, k.buf}, val;
  uint64_t durable = eg_store_last_lsn(t->s);
  int rc = mdb_cursor_open(t->txn, t->s->wal, &c);
  if (!rc) rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
  while (rc == MDB_SUCCESS) {
    if (key.mv_size != 8) {
      rc = MDB_CORRUPTED;
      break;
    }
    uint64_t lsn = eg_be64_get(key.mv_data);
    if (lsn > durable || fn(arg, lsn, val.mv_data, val.mv_size)) break;
    rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  if (c) mdb_cursor_close(c);
  return rc == MDB_CORRUPTED ? EG_ECORRUPT : eg_store__err(rc);
}

/* First or last record of the log; EG_ENOTFOUND when it is empty. */
static eg_err eg_wal_edge(eg_txn *t, MDB_cursor_op op, uint64_t *lsn, MDB_val *val) {
  MDB_cursor *c = NULL;
  MDB_val key;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  int rc = mdb_cursor_open(t->txn, t->s->wal, &c);
  if (!rc) rc = mdb_cursor_get(c, &key, val, op);
  if (!rc && key.mv_size != 8) rc = MDB_CORRUPTED;
  if (!rc) *lsn = eg_be64_get(key.mv_data);
  if (c) mdb_cursor_close(c);
  return rc == MDB_CORRUPTED ? EG_ECORRUPT : eg_store__err(rc);
}

eg_err eg_store_wal_first(eg_txn *t, uint64_t *lsn, int64_t *time_us) {
  MDB_val val;
  eg_err e = eg_wal_edge(t, MDB_FIRST, lsn, &val);
  if (e || !time_us) return e;
  Engram__Storage__V1__WalRecord *r =
      engram__storage__v1__wal_record__unpack(NULL, val.mv_size, val.mv_data);
  if (!r) return EG_ECORRUPT;
  *time_us = r->time_us;
  engram__storage__v1__wal_record__free_unpacked(r, NULL);
  return EG_OK;
}

/* Reads a varint at *p (< end) and moves past it; 0 if it runs off. */
static int eg_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int sh = 0; *p < end && sh < 64; sh += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << sh;
    if (!(b & 0x80)) return 1;
  }
  return 0;
}

eg_err eg_store_wal_head(const uint8_t *rec, size_t len, eg_wal_head *out) {
  const uint8_t *p = rec, *end = rec + len;
  uint64_t tag, v;
  eg_wal_head h = {0};
  int seen = 0; /* bit per field read: lsn, epoch, time */
  while (p < end) {
    if (!eg_varint_get(&p, end, &tag) || !eg_varint_get(&p, end, &v)) return EG_ECORRUPT;
    if ((tag & 7) == 2) { /* length-delimited (the ops): skip */
      if (v > (uint64_t)(end - p)) return EG_ECORRUPT;
      p += v;
      continue;
    }
    if ((tag & 7) != 0) return EG_ECORRUPT;
    switch (tag >> 3) {
      case 1: h.lsn = v, seen |= 1; break;
      case 2: h.epoch = v, seen |= 2; break;
      case 3: h.time_us = (int64_t)v, seen |= 4; break;
      case 5: h.erasure = v != 0; break;
      default: break;
    }
  }
  /* The writer always encodes lsn, epoch and time (proto3 would omit a 0,
   * but an LSN and an epoch start at 1 and a time is never 0). */
  if (seen != 7) return EG_ECORRUPT;
  *out = h;
  return EG_OK;
}

eg_err eg_store_wal_first_after(eg_txn *t, int64_t time_us, size_t max, uint64_t *lsn) {
  MDB_cursor *c = NULL;
  MDB_val key, val;
  eg_err e = EG_OK;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  int rc = mdb_cursor_open(t->txn, t->s->wal, &c);
  if (!rc) rc = mdb_cursor_get(c, &key, &val, MDB_FIRST);
  if (rc == MDB_NOTFOUND) e = EG_ENOTFOUND;
  for (size_t seen = 0; !rc && !e && seen < max; seen++) {
    eg_wal_head h;
    if (key.mv_size != 8) e = EG_ECORRUPT;
    if (!e) e = eg_store_wal_head(val.mv_data, val.mv_size, &h);
    if (e) break;
    *lsn = eg_be64_get(key.mv_data);
    if (h.time_us >= time_us) break;
    ++*lsn; /* this one is older: the answer lies past it */
    rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
  }
  if (c) mdb_cursor_close(c);
  return e ? e : eg_store__err(rc == MDB_NOTFOUND ? MDB_SUCCESS : rc);
}

eg_err eg_store_wal_epoch_at(eg_txn *t, uint64_t lsn, uint64_t *epoch, const uint8_t **rec,
                             size_t *len) {
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_key k = eg_wal_key(lsn);
  MDB_val key = {k.len, k.buf}, val;
  eg_err e = eg_store__err(mdb_get(t->txn, t->s->wal, &key, &val));
  if (e) return e;
  Engram__Storage__V1__WalRecord *r =
      engram__storage__v1__wal_record__unpack(NULL, val.mv_size, val.mv_data);
  if (!r) return EG_ECORRUPT;
  *epoch = r->epoch;
  engram__storage__v1__wal_record__free_unpacked(r, NULL);
  if (rec) {
    *rec = val.mv_data;
    *len = val.mv_size;
  }
  return EG_OK;
}

eg_err eg_store_wal_trim(eg_txn *w, uint64_t below_lsn, size_t max, size_t *n) {
  MDB_cursor *c = NULL;
  MDB_val key, val;
  size_t done = 0;
  if (!eg_txn_writable(w)) return EG_EINVAL;
  int rc = mdb_cursor_open(w->txn, w->s->wal, &c);
  if (!rc) rc = mdb_cursor_get(c, &key, &val, MDB_FIRST);
  while (!rc && done < max && key.mv_size == 8 && eg_be64_get(key.mv_data) < below_lsn) {
    if ((rc = mdb_cursor_del(c, 0))) break;
    done++;
    /* After a del the cursor stands on the next key; NEXT returns it. */
    rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  if (c) mdb_cursor_close(c);
  if (n) *n = done;
  return eg_store__err(rc);
}

uint64_t eg_store_epoch(const eg_store *s) {
  return atomic_load_explicit(&s->epoch, memory_order_acquire);
}

eg_err eg_store_set_epoch(eg_txn *w, uint64_t epoch) {
  if (!w || w->kind != EG_TXN_WRITE || epoch <= eg_store_epoch(w->s)) return EG_EINVAL;
  w->new_epoch = epoch;
  return EG_OK;
}

void eg_store_mark_erasure(eg_txn *t) { t->erasure = 1; }

uint64_t eg_store_erase_floor(const eg_store *s) {
  return atomic_load_explicit(&s->erase_floor, memory_order_acquire);
}
