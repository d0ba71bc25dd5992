/* Checkpoints and their pending writes: see storage/checkpoints.h for the
 * key layout. */
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "storage/internal.h"

#define EG_CKPT_DESC (&engram__storage__v1__checkpoint_record__descriptor)
#define EG_CKPT_WRITE_DESC (&engram__storage__v1__checkpoint_write_record__descriptor)
#define EG_IDX_USER 0x01
#define EG_IDX_THREAD 0x02

void eg_ckpt_rec_free(eg_ckpt_rec *rec) {
  if (rec) protobuf_c_message_free_unpacked(&rec->base, NULL);
}

void eg_ckpt_write_rec_free(eg_ckpt_write_rec *rec) {
  if (rec) protobuf_c_message_free_unpacked(&rec->base, NULL);
}

/* Length of id if it may be a key part: 1..EG_STORE_ID_MAX bytes, or
 * 0..EG_STORE_ID_MAX when empty_ok (a namespace); else -1. */
static int eg_ckpt_id_len(const char *id, int empty_ok) {
  if (!id) return -1;
  size_t n = strnlen(id, EG_STORE_ID_MAX + 1);
  return n > EG_STORE_ID_MAX || (n == 0 && !empty_ok) ? -1 : (int)n;
}

/* D(id) into d (32 bytes; the first EG_CKPT_DIGEST_LEN are D). */
static eg_err eg_ckpt_digest(const char *id, int empty_ok, uint8_t d[32]) {
  int n = eg_ckpt_id_len(id, empty_ok);
  if (n < 0) return EG_EINVAL;
  eg_sha256 h;
  eg_sha256_init(&h);
  eg_sha256_update(&h, id, (size_t)n);
  eg_sha256_final(&h, d);
  return EG_OK;
}

/* Appends D(id). */
static eg_err eg_key_digest(eg_key *k, const char *id, int empty_ok) {
  uint8_t d[32];
  eg_err e = eg_ckpt_digest(id, empty_ok, d);
  return e ? e : eg_key_raw(k, d, EG_CKPT_DIGEST_LEN);
}

/* UK: u8len T | D(user_id). */
static eg_err eg_key_ckpt_user(eg_key *k, const char *tenant, const char *user_id) {
  eg_key_init(k);
  eg_err e = eg_key_id(k, tenant);
  return e ? e : eg_key_digest(k, user_id, 0);
}

/* TK: UK | D(thread_id). */
static eg_err eg_key_ckpt_thread(eg_key *k, const char *tenant, const char *user_id,
                                 const char *thread) {
  eg_err e = eg_key_ckpt_user(k, tenant, user_id);
  return e ? e : eg_key_digest(k, thread, 0);
}

/* TK | D(ns): one namespace of a thread. */
static eg_err eg_key_ckpt_ns(eg_key *k, const char *tenant, const char *user_id, const char *thread,
                             const char *ns) {
  eg_err e = eg_key_ckpt_thread(k, tenant, user_id, thread);
  return e ? e : eg_key_digest(k, ns, 1);
}

/* checkpoint_id 0x00 (an index key's id part). */
static eg_err eg_key_zid(eg_key *k, const char *id) {
  uint8_t z = 0;
  eg_err e = eg_key_tail(k, id);
  return e ? e : eg_key_raw(k, &z, 1);
}

/* The two index keys of a checkpoint. */
static eg_err eg_key_ckpt_index(eg_key *by_user, eg_key *by_thread, const char *tenant,
                                const char *user_id, const char *thread, const char *ns,
                                const char *id) {
  uint8_t kind = EG_IDX_USER;
  eg_err e = eg_key_ckpt_user(by_user, tenant, user_id);
  if (!e) e = eg_key_raw(by_user, &kind, 1);
  if (!e) e = eg_key_zid(by_user, id);
  if (!e) e = eg_key_digest(by_user, thread, 0);
  if (!e) e = eg_key_digest(by_user, ns, 1);
  kind = EG_IDX_THREAD;
  if (!e) e = eg_key_ckpt_user(by_thread, tenant, user_id);
  if (!e) e = eg_key_raw(by_thread, &kind, 1);
  if (!e) e = eg_key_digest(by_thread, thread, 0);
  if (!e) e = eg_key_zid(by_thread, id);
  return e ? e : eg_key_digest(by_thread, ns, 1);
}

eg_err eg_store_checkpoint_put(eg_txn *t, const char *tenant, const char *user_id,
                               const eg_ckpt_rec *rec) {
  eg_key k, iu, it;
  if (!eg_txn_writable(t) || !rec) return EG_EINVAL;
  eg_err e = eg_key_ckpt_ns(&k, tenant, user_id, rec->thread_id, rec->checkpoint_ns);
  if (!e) e = eg_key_tail(&k, rec->checkpoint_id);
  if (!e) e = eg_key_ckpt_index(&iu, &it, tenant, user_id, rec->thread_id, rec->checkpoint_ns,
                                rec->checkpoint_id);
  if (!e && !eg_store__u64_ascending(rec->metadata_hashes, rec->n_metadata_hashes)) e = EG_EINVAL;
  if (!e) e = eg_store__put_msg(t, t->s->checkpoints, &k, &rec->base, 0);
  if (!e) e = eg_store__put(t, t->s->checkpoints_by_user, &iu, "", 0);
  return e ? e : eg_store__put(t, t->s->checkpoints_by_user, &it, "", 0);
}

/* Decodes v, the value of key k in checkpoints (TK | D(ns) | id, whose
 * id starts at id_at), and checks it is the one k names: its id, and its
 * thread and ns (NULL: not known here; the index path checks digests). */
static eg_err eg_ckpt_decode(const MDB_val *k, size_t id_at, const MDB_val *v, const char *thread,
                             const char *ns, eg_ckpt_rec **out) {
  eg_ckpt_rec *rec;
  eg_err e = eg_store__decode(EG_CKPT_DESC, v, (ProtobufCMessage **)&rec);
  if (e) return e;
  size_t id_len = k->mv_size - id_at;
  /* A digest collision would show another thread's checkpoint. */
  if (strlen(rec->checkpoint_id) != id_len ||
      memcmp(rec->checkpoint_id, (const uint8_t *)k->mv_data + id_at, id_len) != 0 ||
      (thread && strcmp(rec->thread_id, thread) != 0) || (ns && strcmp(rec->checkpoint_ns, ns) != 0)) {
    eg_ckpt_rec_free(rec);
    return EG_ECORRUPT;
  }
  *out = rec;
  return EG_OK;
}

int eg_store_checkpoint_key_user(const uint8_t *key, size_t key_len, const char *tenant,
                                 const char *user_id) {
  eg_key uk;
  if (eg_key_ckpt_user(&uk, tenant, user_id) != EG_OK) return 0;
  return key_len > uk.len && memcmp(key, uk.buf, uk.len) == 0;
}

eg_err eg_store_checkpoint_get(eg_txn *t, const char *tenant, const char *user_id,
                               const char *thread_id, const char *ns, const char *checkpoint_id,
                               eg_ckpt_rec **out) {
  eg_key k;
  MDB_val key, val;
  MDB_cursor *c = NULL;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_ckpt_ns(&k, tenant, user_id, thread_id, ns);
  if (e) return e;
  if (checkpoint_id && checkpoint_id[0]) {
    if ((e = eg_key_tail(&k, checkpoint_id))) return e;
    key = (MDB_val){k.len, k.buf};
    int rc = mdb_get(t->txn, t->s->checkpoints, &key, &val);
    if (rc) return eg_store__err(rc);
    return eg_ckpt_decode(&key, key.mv_size - strlen(checkpoint_id), &val, thread_id, ns, out);
  }
  /* The newest: the last key under the namespace's prefix. */
  eg_key end = k;
  uint8_t ff = 0xff;
  if ((e = eg_key_raw(&end, &ff, 1))) return e;
  int rc = mdb_cursor_open(t->txn, t->s->checkpoints, &c);
  if (!rc) rc = eg_store__seek_below(c, &end, 0, &key, &val);
  mdb_cursor_close(c);
  if (rc) return eg_store__err(rc);
  if (!eg_key_has_prefix(key.mv_data, key.mv_size, &k)) return EG_ENOTFOUND;
  return eg_ckpt_decode(&key, k.len, &val, thread_id, ns, out);
}

/* ---- scan ------------------------------------------------------------------------ */

/* What a scan walks: dbi under prefix, newest first, from below seek. */
struct eg_ckpt_range {
  MDB_dbi dbi;
  eg_key prefix, seek;
  int index; /* entries of checkpoints_by_user, not records */
};

/* Sets the range's seek: prefix | after (a position), or prefix |
 * before_id [0x00 in an index], or the end of the prefix. */
static eg_err eg_ckpt_range_seek(struct eg_ckpt_range *r, const char *before_id,
                                 const eg_ckpt_pos *after) {
  r->seek = r->prefix;
  if (after) {
    if (after->len == 0 || after->len > EG_CKPT_POS_MAX) return EG_EINVAL;
    return eg_key_raw(&r->seek, after->buf, after->len);
  }
  if (before_id && before_id[0]) return r->index ? eg_key_zid(&r->seek, before_id) : eg_key_tail(&r->seek, before_id);
  uint8_t ff = 0xff;
  return eg_key_raw(&r->seek, &ff, 1);
}

/* An index entry k (past UK | kind, see the layout) split into its parts;
 * EG_ECORRUPT if it does not have their shape. */
struct eg_ckpt_entry {
  const uint8_t *dt, *dn, *id; /* D(thread), D(ns), checkpoint_id */
  size_t id_len;
};

static eg_err eg_ckpt_entry_parse(const eg_key *uk, int kind, const MDB_val *k,
                                  struct eg_ckpt_entry *out) {
  const uint8_t *p = (const uint8_t *)k->mv_data + uk->len + 1;
  if (k->mv_size < uk->len + 1 + 2 * EG_CKPT_DIGEST_LEN + 2) return EG_ECORRUPT;
  size_t n = k->mv_size - uk->len - 1;
  out->id_len = n - 1 - 2 * EG_CKPT_DIGEST_LEN;
  if (kind == EG_IDX_USER) {
    out->id = p;
    out->dt = p + out->id_len + 1;
    out->dn = out->dt + EG_CKPT_DIGEST_LEN;
  } else {
    out->dt = p;
    out->id = p + EG_CKPT_DIGEST_LEN;
    out->dn = out->id + out->id_len + 1;
  }
  if (out->id[out->id_len] != 0 || out->id_len > EG_STORE_ID_MAX) return EG_ECORRUPT;
  return EG_OK;
}

/* The checkpoints key an index entry names: TK | D(ns) | id. */
static eg_err eg_ckpt_entry_key(const eg_key *uk, const struct eg_ckpt_entry *en, eg_key *rk) {
  *rk = *uk;
  eg_err e = eg_key_raw(rk, en->dt, EG_CKPT_DIGEST_LEN);
  if (!e) e = eg_key_raw(rk, en->dn, EG_CKPT_DIGEST_LEN);
  return e ? e : eg_key_raw(rk, en->id, en->id_len);
}

/* 1 if rec's thread and namespace are those the entry names by digest
 * (its id is checked where it is decoded). */
static int eg_ckpt_entry_names(const struct eg_ckpt_entry *en, const eg_ckpt_rec *rec) {
  uint8_t dt[32], dn[32];
  return eg_ckpt_digest(rec->thread_id, 0, dt) == EG_OK &&
         memcmp(dt, en->dt, EG_CKPT_DIGEST_LEN) == 0 &&
         eg_ckpt_digest(rec->checkpoint_ns, 1, dn) == EG_OK &&
         memcmp(dn, en->dn, EG_CKPT_DIGEST_LEN) == 0;
}

/* The record an index entry k (past UK | kind) names, checked to be that
 * one (as the direct path checks its own: a record that is not the one
 * named is damage, EG_ECORRUPT). */
static eg_err eg_ckpt_from_index(eg_txn *t, const eg_key *uk, int kind, const MDB_val *k,
                                 eg_ckpt_rec **out) {
  struct eg_ckpt_entry en;
  eg_key rk;
  eg_err e = eg_ckpt_entry_parse(uk, kind, k, &en);
  if (!e) e = eg_ckpt_entry_key(uk, &en, &rk);
  if (e) return e;
  MDB_val key = {rk.len, rk.buf}, val;
  int rc = mdb_get(t->txn, t->s->checkpoints, &key, &val);
  /* An index entry without its record is damage, not absence. */
  if (rc == MDB_NOTFOUND) return EG_ECORRUPT;
  if (rc) return eg_store__err(rc);
  eg_ckpt_rec *rec;
  if ((e = eg_ckpt_decode(&key, rk.len - en.id_len, &val, NULL, NULL, &rec))) return e;
  if (!eg_ckpt_entry_names(&en, rec)) {
    eg_ckpt_rec_free(rec);
    return EG_ECORRUPT;
  }
  *out = rec;
  return EG_OK;
}

eg_err eg_store_checkpoints_scan(eg_txn *t, const char *tenant, const char *user_id,
                                 const char *thread_id, const char *ns, const char *before_id,
                                 const eg_ckpt_pos *after, eg_ckpt_visit_fn fn, void *arg) {
  struct eg_ckpt_range r = {0};
  eg_key uk;
  uint8_t kind = 0;
  MDB_cursor *c = NULL;
  MDB_val key, val;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_err e = eg_key_ckpt_user(&uk, tenant, user_id);
  if (e) return e;
  if (thread_id && thread_id[0] && ns) {
    r.dbi = t->s->checkpoints;
    e = eg_key_ckpt_ns(&r.prefix, tenant, user_id, thread_id, ns);
  } else {
    r.dbi = t->s->checkpoints_by_user;
    r.index = 1;
    kind = thread_id && thread_id[0] ? EG_IDX_THREAD : EG_IDX_USER;
    r.prefix = uk;
    e = eg_key_raw(&r.prefix, &kind, 1);
    if (!e && kind == EG_IDX_THREAD) e = eg_key_digest(&r.prefix, thread_id, 0);
  }
  if (!e) e = eg_ckpt_range_seek(&r, before_id, after);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, r.dbi, &c);
  if (rc) return eg_store__err(rc);
  rc = eg_store__seek_below(c, &r.seek, 0, &key, &val);
  while (!rc && eg_key_has_prefix(key.mv_data, key.mv_size, &r.prefix)) {
    eg_ckpt_pos pos;
    eg_ckpt_rec *rec;
    pos.len = key.mv_size - r.prefix.len;
    if (pos.len == 0 || pos.len > EG_CKPT_POS_MAX) {
      e = EG_ECORRUPT;
      break;
    }
    memcpy(pos.buf, (const uint8_t *)key.mv_data + r.prefix.len, pos.len);
    e = r.index ? eg_ckpt_from_index(t, &uk, kind, &key, &rec)
                : eg_ckpt_decode(&key, r.prefix.len, &val, thread_id, ns, &rec);
    if (e || fn(arg, &pos, rec)) break;
    rc = mdb_cursor_get(c, &key, &val, MDB_PREV);
  }
  mdb_cursor_close(c);
  if (e) return e;
  return rc && rc != MDB_NOTFOUND ? eg_store__err(rc) : EG_OK;
}

/* ---- pending writes ---------------------------------------------------------------- */

/* TK | D(ns) | D(checkpoint_id): one checkpoint's writes. */
static eg_err eg_key_ckpt_writes(eg_key *k, const char *tenant, const char *user_id,
                                 const char *thread, const char *ns, const char *id) {
  eg_err e = eg_key_ckpt_ns(k, tenant, user_id, thread, ns);
  return e ? e : eg_key_digest(k, id, 0);
}

eg_err eg_store_checkpoint_write_put(eg_txn *t, const char *tenant, const char *user_id,
                                     const char *thread_id, const char *ns,
                                     const char *checkpoint_id, const eg_ckpt_write_rec *rec,
                                     int *written) {
  eg_key k;
  uint8_t idx[4];
  if (!eg_txn_writable(t) || !rec) return EG_EINVAL;
  /* Flipping the sign bit orders negative idx before positive. */
  eg_be32_put(idx, (uint32_t)rec->idx ^ 0x80000000u);
  eg_err e = eg_key_ckpt_writes(&k, tenant, user_id, thread_id, ns, checkpoint_id);
  if (!e) e = eg_key_digest(&k, rec->task_id, 0);
  if (!e) e = eg_key_raw(&k, idx, sizeof idx);
  if (!e) e = eg_store__put_msg(t, t->s->checkpoint_writes, &k, &rec->base,
                                rec->idx >= 0 ? MDB_NOOVERWRITE : 0);
  *written = e == EG_OK;
  return e == EG_EEXIST ? EG_OK : e;
}

eg_err eg_store_checkpoint_write_replace(eg_txn *t, const char *tenant, const char *user_id,
                                         const char *thread_id, const char *ns,
                                         const char *checkpoint_id, const eg_ckpt_write_rec *rec) {
  eg_key k;
  uint8_t idx[4];
  MDB_val key, val;
  if (!eg_txn_writable(t) || !rec) return EG_EINVAL;
  eg_be32_put(idx, (uint32_t)rec->idx ^ 0x80000000u);
  eg_err e = eg_key_ckpt_writes(&k, tenant, user_id, thread_id, ns, checkpoint_id);
  if (!e) e = eg_key_digest(&k, rec->task_id, 0);
  if (!e) e = eg_key_raw(&k, idx, sizeof idx);
  if (e) return e;
  key = (MDB_val){k.len, k.buf};
  if ((e = eg_store__err(mdb_get(t->txn, t->s->checkpoint_writes, &key, &val)))) return e;
  return eg_store__put_msg(t, t->s->checkpoint_writes, &k, &rec->base, 0);
}

void eg_ckpt_writes_free(eg_ckpt_write_rec **w, size_t n) {
  for (size_t i = 0; w && i < n; i++) eg_ckpt_write_rec_free(w[i]);
  free(w);
}

static int eg_write_cmp(const void *a, const void *b) {
  const eg_ckpt_write_rec *x = *(eg_ckpt_write_rec *const *)a, *y = *(eg_ckpt_write_rec *const *)b;
  int c = strcmp(x->task_id, y->task_id);
  return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Calls fn(arg, value) on each pending write of checkpoint (thread, ns,
 * id) in key order, at most max of them (one more is EG_ELIMIT); fn's
 * failure stops the walk. */
typedef eg_err (*eg_write_visit_fn)(void *arg, const MDB_val *v);

static eg_err eg_ckpt_writes_walk(eg_txn *t, const char *tenant, const char *user_id,
                                  const char *thread_id, const char *ns, const char *checkpoint_id,
                                  size_t max, eg_write_visit_fn fn, void *arg) {
  eg_key k;
  MDB_cursor *c = NULL;
  MDB_val key, val;
  size_t cnt = 0;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_ckpt_writes(&k, tenant, user_id, thread_id, ns, checkpoint_id);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, t->s->checkpoint_writes, &c);
  if (rc) return eg_store__err(rc);
  rc = eg_store__seek_at(c, &k, &key, &val);
  while (!rc && eg_key_has_prefix(key.mv_data, key.mv_size, &k)) {
    if (cnt++ == max) {
      e = EG_ELIMIT;
      break;
    }
    if ((e = fn(arg, &val))) break;
    rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
  }
  mdb_cursor_close(c);
  if (!e && rc && rc != MDB_NOTFOUND) e = eg_store__err(rc);
  return e;
}

struct eg_writes_buf {
  eg_ckpt_write_rec **w;
  size_t n, cap;
};

static eg_err eg_writes_decode(void *arg, const MDB_val *v) {
  struct eg_writes_buf *b = arg;
  if (b->n == b->cap) {
    size_t ncap = b->cap ? 2 * b->cap : 16;
    eg_ckpt_write_rec **nw = realloc(b->w, ncap * sizeof *nw);
    if (!nw) return EG_ENOMEM;
    b->w = nw;
    b->cap = ncap;
  }
  eg_err e = eg_store__decode(EG_CKPT_WRITE_DESC, v, (ProtobufCMessage **)&b->w[b->n]);
  if (!e) b->n++;
  return e;
}

eg_err eg_store_checkpoint_writes_get(eg_txn *t, const char *tenant, const char *user_id,
                                      const char *thread_id, const char *ns,
                                      const char *checkpoint_id, size_t max,
                                      eg_ckpt_write_rec ***out, size_t *n) {
  struct eg_writes_buf b = {0};
  *out = NULL;
  *n = 0;
  eg_err e = eg_ckpt_writes_walk(t, tenant, user_id, thread_id, ns, checkpoint_id, max,
                                 eg_writes_decode, &b);
  if (e) {
    eg_ckpt_writes_free(b.w, b.n);
    return e;
  }
  /* Keys order by the task's digest: the API's order is by task_id. */
  if (b.n > 1) qsort(b.w, b.n, sizeof *b.w, eg_write_cmp);
  *out = b.w;
  *n = b.n;
  return EG_OK;
}

struct eg_writes_size {
  size_t n;
  uint64_t bytes;
};

static eg_err eg_writes_add(void *arg, const MDB_val *v) {
  struct eg_writes_size *z = arg;
  z->n++;
  z->bytes += v->mv_size;
  return EG_OK;
}

eg_err eg_store_checkpoint_writes_size(eg_txn *t, const char *tenant, const char *user_id,
                                       const char *thread_id, const char *ns,
                                       const char *checkpoint_id, size_t max, size_t *n,
                                       uint64_t *bytes) {
  struct eg_writes_size z = {0};
  eg_err e = eg_ckpt_writes_walk(t, tenant, user_id, thread_id, ns, checkpoint_id, max,
                                 eg_writes_add, &z);
  if (e) return e;
  *n = z.n;
  *bytes = z.bytes;
  return EG_OK;
}

/* ---- deletion -------------------------------------------------------------------- */

/* DeleteThread's first part: the thread's checkpoints oldest first (its
 * index 0x02 in key order), each with its two index entries, all three
 * keys built from the entry itself: nothing is decoded, so a damaged
 * record is deleted like any other. */
static eg_err eg_thread_delete_checkpoints(eg_txn *t, const char *tenant, const char *user_id,
                                           const char *thread_id, uint64_t budget,
                                           uint64_t *spent, uint64_t *checkpoints, int *left) {
  eg_key uk, prefix, rk, iu;
  uint8_t kind = EG_IDX_THREAD, zero = 0, user_kind = EG_IDX_USER;
  eg_err e = eg_key_ckpt_user(&uk, tenant, user_id);
  if (!e) {
    prefix = uk;
    e = eg_key_raw(&prefix, &kind, 1);
  }
  if (!e) e = eg_key_digest(&prefix, thread_id, 0);
  while (!e) {
    MDB_cursor *c = NULL;
    MDB_val key, val;
    eg_key entry;
    int rc = mdb_cursor_open(t->txn, t->s->checkpoints_by_user, &c);
    if (!rc) rc = eg_store__seek_at(c, &prefix, &key, &val);
    if (!rc && !eg_key_has_prefix(key.mv_data, key.mv_size, &prefix)) rc = MDB_NOTFOUND;
    if (!rc) {
      entry.len = key.mv_size;
      memcpy(entry.buf, key.mv_data, key.mv_size);
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) return EG_OK;
    if (rc) return eg_store__err(rc);
    if (*spent + 3 > budget && *spent > 0) {
      *left = 1;
      return EG_OK;
    }
    key = (MDB_val){entry.len, entry.buf};
    struct eg_ckpt_entry en;
    /* An entry of another shape names no record: it goes alone. */
    if (eg_ckpt_entry_parse(&uk, EG_IDX_THREAD, &key, &en) == EG_OK) {
      e = eg_ckpt_entry_key(&uk, &en, &rk);
      if (!e) {
        iu = uk;
        e = eg_key_raw(&iu, &user_kind, 1);
      }
      if (!e) e = eg_key_raw(&iu, en.id, en.id_len);
      if (!e) e = eg_key_raw(&iu, &zero, 1);
      if (!e) e = eg_key_raw(&iu, en.dt, EG_CKPT_DIGEST_LEN);
      if (!e) e = eg_key_raw(&iu, en.dn, EG_CKPT_DIGEST_LEN);
      if (!e) e = eg_store__del_quiet(t, t->s->checkpoints_by_user, &iu);
      if (!e) {
        e = eg_store__del(t, t->s->checkpoints, &rk);
        if (e == EG_OK) ++*checkpoints;
        if (e == EG_ENOTFOUND) e = EG_OK;
      }
    }
    if (!e) e = eg_store__del(t, t->s->checkpoints_by_user, &entry);
    *spent += 3;
  }
  return e;
}

eg_err eg_store_thread_delete_step(eg_txn *t, const char *tenant, const char *user_id,
                                   const char *thread_id, uint64_t budget, uint64_t *checkpoints,
                                   uint64_t *writes, int *done) {
  eg_key tk;
  uint64_t spent = 0;
  int left = 0;
  if (!eg_txn_writable(t) || budget == 0) return EG_EINVAL;
  *done = 0;
  eg_err e = eg_key_ckpt_thread(&tk, tenant, user_id, thread_id);
  /* Checkpoints before writes, so that a checkpoint left by a step (or a
   * crash between steps) still has all its writes: a half-deleted thread
   * is its newest checkpoints, whole. Then records with no index entry
   * (damage), then the writes, which no checkpoint shows any more. */
  if (!e) e = eg_thread_delete_checkpoints(t, tenant, user_id, thread_id, budget, &spent,
                                           checkpoints, &left);
  if (!e && !left)
    e = eg_store__erase_range(t, t->s->checkpoints, &tk, budget, &spent, checkpoints, &left);
  if (!e && !left)
    e = eg_store__erase_range(t, t->s->checkpoint_writes, &tk, budget, &spent, writes, &left);
  if (!e && !left) *done = 1;
  return e;
}

eg_err eg_store__erase_checkpoints(eg_txn *t, const char *tenant, const char *user_id,
                                   uint64_t budget, uint64_t *spent, int *left) {
  eg_key uk;
  eg_err e = eg_key_ckpt_user(&uk, tenant, user_id);
  if (!e) e = eg_store__erase_range(t, t->s->checkpoint_writes, &uk, budget, spent, NULL, left);
  if (!e && !*left) e = eg_store__erase_range(t, t->s->checkpoints_by_user, &uk, budget, spent, NULL, left);
  if (!e && !*left) e = eg_store__erase_range(t, t->s->checkpoints, &uk, budget, spent, NULL, left);
  return e;
}
