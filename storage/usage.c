/* Per-tenant storage usage (internal.h, "usage.c") and limit overrides. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/internal.h"

#define EG_TENANT_LIMITS_DESC (&engram__storage__v1__tenant_limits_record__descriptor)

int eg_store__usage_counted(const char *name) {
  static const char *const skip[] = {EG_DB_SWEEP_DUE, EG_DB_INDEX_STATE, EG_DB_TENANT_LIMITS,
                                     EG_DB_TENANT_USAGE, EG_DB_KEY_JOBS};
  for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
    if (strcmp(name, skip[i]) == 0) return 0;
  return 1;
}

int eg_store__key_tenant(const void *key, size_t klen, char *tenant) {
  const uint8_t *p = key;
  if (klen < 2 || p[0] == 0 || p[0] > EG_STORE_ID_MAX || klen < 1 + (size_t)p[0]) return 0;
  memcpy(tenant, p + 1, p[0]);
  tenant[p[0]] = '\0';
  return 1;
}

static int eg_counted(const eg_txn *t, MDB_dbi dbi) {
  for (size_t i = 0; i < t->s->n_data_dbs; i++)
    if (t->s->data_dbs[i].dbi == dbi) return t->s->data_dbs[i].counted;
  return 0;
}

static eg_usage_delta *eg_usage_find(const eg_usage_buf *b, const char *tenant) {
  for (size_t i = 0; i < b->n; i++)
    if (strcmp(b->v[i].tenant, tenant) == 0) return &b->v[i];
  return NULL;
}

static eg_err eg_usage_add(eg_usage_buf *b, const char *tenant, int64_t bytes) {
  eg_usage_delta *d = eg_usage_find(b, tenant);
  if (!d) {
    if (b->n == b->cap) {
      size_t cap = b->cap ? b->cap * 2 : 4;
      eg_usage_delta *v = realloc(b->v, cap * sizeof *v);
      if (!v) return EG_ENOMEM;
      b->v = v;
      b->cap = cap;
    }
    d = &b->v[b->n++];
    snprintf(d->tenant, sizeof d->tenant, "%s", tenant);
    d->delta = 0;
  }
  d->delta += bytes;
  return EG_OK;
}

/* eg_usage__count for a dbi known to be counted. */
static eg_err eg_usage_key(eg_txn *t, const MDB_val *key, int64_t bytes) {
  char tenant[EG_STORE_ID_MAX + 1];
  if (bytes == 0 || !eg_store__key_tenant(key->mv_data, key->mv_size, tenant)) return EG_OK;
  return eg_usage_add(&t->usage, tenant, bytes);
}

eg_err eg_usage__count(eg_txn *t, MDB_dbi dbi, const void *key, size_t klen, int64_t bytes) {
  MDB_val k = {klen, (void *)key};
  return eg_counted(t, dbi) ? eg_usage_key(t, &k, bytes) : EG_OK;
}

/* t's cursor of dbi into *c, opened at the first write there; NULL when
 * dbi is not counted. */
static eg_err eg_usage_cursor(eg_txn *t, MDB_dbi dbi, MDB_cursor **c) {
  *c = NULL;
  if (dbi >= EG_TXN_CURSORS) return EG_EINVAL; /* LMDB hands out no such dbi */
  if (!t->cursors[dbi] && eg_counted(t, dbi)) {
    int rc = mdb_cursor_open(t->txn, dbi, &t->cursors[dbi]);
    if (rc) return eg_store__err(rc);
  }
  *c = t->cursors[dbi];
  return EG_OK;
}

eg_err eg_usage__put(eg_txn *t, MDB_dbi dbi, const MDB_val *key, MDB_val *val, unsigned flags) {
  MDB_cursor *c;
  eg_err e = eg_usage_cursor(t, dbi, &c);
  if (e) return e;
  MDB_val k = *key, in = *val;
  int64_t old = 0;
  int rc = c ? mdb_cursor_put(c, &k, val, flags | MDB_NOOVERWRITE)
             : mdb_put(t->txn, dbi, &k, val, flags);
  if (rc == MDB_KEYEXIST && c && !(flags & MDB_NOOVERWRITE)) {
    /* The search stopped on the key and gave its value: replace it there.
     * MDB_CURRENT with another size is a delete and an insert on that
     * page (lmdb.h). LMDB 0.9.24 takes a bare MDB_CURRENT without a
     * search; with MDB_RESERVE it sets the cursor again, which from a
     * cursor already on the key compares it with that page's keys and
     * does not descend the tree (mdb.c, mdb_cursor_set). */
    old = (int64_t)(k.mv_size + val->mv_size);
    *val = in;
    rc = mdb_cursor_put(c, &k, val, MDB_CURRENT | (flags & MDB_RESERVE));
  }
  if (rc == MDB_KEYEXIST) {
    *val = in;
    return EG_EEXIST;
  }
  if (rc) return eg_store__err(rc);
  return c ? eg_usage_key(t, key, (int64_t)(key->mv_size + val->mv_size) - old) : EG_OK;
}

eg_err eg_usage__del(eg_txn *t, MDB_dbi dbi, const MDB_val *key) {
  MDB_cursor *c;
  eg_err e = eg_usage_cursor(t, dbi, &c);
  if (e) return e;
  MDB_val k = *key, v;
  if (!c) return eg_store__err(mdb_del(t->txn, dbi, &k, NULL));
  int rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
  if (!rc) rc = mdb_cursor_del(c, 0);
  /* key, not k: k pointed into the page the delete changed. */
  return rc ? eg_store__err(rc) : eg_usage_key(t, key, -(int64_t)(key->mv_size + v.mv_size));
}

eg_err eg_usage__reserve(eg_txn *parent, const eg_txn *child) {
  size_t need = parent->usage.n + child->usage.n;
  if (need <= parent->usage.cap) return EG_OK;
  eg_usage_delta *v = realloc(parent->usage.v, need * sizeof *v);
  if (!v) return EG_ENOMEM;
  parent->usage.v = v;
  parent->usage.cap = need;
  return EG_OK;
}

void eg_usage__merge(eg_txn *parent, eg_txn *child) {
  /* Room was reserved (eg_usage__reserve): adding cannot fail. */
  for (size_t i = 0; i < child->usage.n; i++)
    (void)eg_usage_add(&parent->usage, child->usage.v[i].tenant, child->usage.v[i].delta);
  parent->limits_touched |= child->limits_touched;
  eg_usage__free(&child->usage);
}

void eg_usage__free(eg_usage_buf *b) {
  free(b->v);
  *b = (eg_usage_buf){0};
}

/* The stored row of tenant k in txn (0 when absent). */
static eg_err eg_usage_row(MDB_txn *txn, MDB_dbi dbi, const eg_key *k, uint64_t *bytes) {
  MDB_val key = {k->len, (void *)k->buf}, val;
  int rc = mdb_get(txn, dbi, &key, &val);
  *bytes = 0;
  if (rc == MDB_NOTFOUND) return EG_OK;
  if (rc) return eg_store__err(rc);
  if (val.mv_size != 8) return EG_ECORRUPT;
  *bytes = eg_be64_get(val.mv_data);
  return EG_OK;
}

eg_err eg_usage__flush(eg_txn *w) {
  eg_err e = EG_OK;
  for (size_t i = 0; i < w->usage.n && !e; i++) {
    const eg_usage_delta *d = &w->usage.v[i];
    eg_key k;
    uint64_t old;
    if (d->delta == 0) continue;
    if ((e = eg_key_tenant(&k, d->tenant)) ||
        (e = eg_usage_row(w->txn, w->s->tenant_usage, &k, &old)))
      break;
    /* Never below 0: a usage that drifted (it cannot, but a store is
     * long-lived) heals at the tenant's next delete rather than wrapping. */
    int64_t now = (int64_t)old + d->delta;
    if (now <= 0) {
      e = eg_store__del_quiet(w, w->s->tenant_usage, &k);
    } else {
      uint8_t b[8];
      eg_be64_put(b, (uint64_t)now);
      e = eg_store__put(w, w->s->tenant_usage, &k, b, sizeof b);
    }
  }
  eg_usage__free(&w->usage);
  return e;
}

eg_err eg_store_tenant_usage(eg_txn *t, const char *tenant, uint64_t *bytes) {
  eg_key k;
  if (!eg_txn_readable(t) && !eg_txn_writable(t)) return EG_EINVAL;
  eg_err e = eg_key_tenant(&k, tenant);
  if (!e) e = eg_usage_row(t->txn, t->s->tenant_usage, &k, bytes);
  if (e) return e;
  int64_t sum = (int64_t)*bytes;
  for (const eg_txn *x = t; x && x->kind != EG_TXN_READ; x = x->parent)
    sum += eg_store_txn_usage_delta(x, tenant);
  *bytes = sum > 0 ? (uint64_t)sum : 0;
  return EG_OK;
}

int64_t eg_store_txn_usage_delta(const eg_txn *t, const char *tenant) {
  const eg_usage_delta *d = t->kind == EG_TXN_READ ? NULL : eg_usage_find(&t->usage, tenant);
  return d ? d->delta : 0;
}

/* ---- migration 7 ---------------------------------------------------------- */

/* Adds bytes to tenant's row in txn (unlogged: every copy of the store
 * runs the migration on its own data). */
static eg_err eg_recount_add(MDB_txn *txn, MDB_dbi usage, const char *tenant, uint64_t bytes) {
  eg_key k;
  uint64_t old;
  uint8_t b[8];
  eg_err e = eg_key_tenant(&k, tenant);
  if (!e) e = eg_usage_row(txn, usage, &k, &old);
  if (e) return e;
  eg_be64_put(b, old + bytes);
  MDB_val key = {k.len, k.buf}, val = {sizeof b, b};
  return eg_store__err(mdb_put(txn, usage, &key, &val, 0));
}

/* One DB: keys are tenant-first, so a tenant's keys are one run; each run
 * is added to its tenant's row once. */
static eg_err eg_recount_db(MDB_txn *txn, MDB_dbi dbi, MDB_dbi usage) {
  MDB_cursor *c = NULL;
  MDB_val k, v;
  char cur[EG_STORE_ID_MAX + 1] = "", t[EG_STORE_ID_MAX + 1];
  uint64_t run = 0;
  eg_err e = EG_OK;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (!rc) rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  for (; rc == MDB_SUCCESS && !e; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (!eg_store__key_tenant(k.mv_data, k.mv_size, t)) continue;
    if (strcmp(t, cur) != 0) {
      if (run) e = eg_recount_add(txn, usage, cur, run);
      snprintf(cur, sizeof cur, "%s", t);
      run = 0;
    }
    run += k.mv_size + v.mv_size;
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  if (!e && !rc && run) e = eg_recount_add(txn, usage, cur, run);
  if (c) mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_usage__recount(MDB_txn *txn, char *err, size_t errlen) {
  MDB_dbi usage, dbi;
  int rc = mdb_dbi_open(txn, EG_DB_TENANT_USAGE, 0, &usage);
  if (!rc) rc = mdb_drop(txn, usage, 0);
  if (rc) {
    snprintf(err, errlen, "usage count: %s: %s", EG_DB_TENANT_USAGE, mdb_strerror(rc));
    return eg_store__err(rc);
  }
  for (size_t i = 0; i < eg_store__n_data_dbs; i++) {
    const char *name = eg_store__data_db_table[i].name;
    if (!eg_store__usage_counted(name)) continue;
    eg_err e = eg_store__err(mdb_dbi_open(txn, name, 0, &dbi));
    if (!e) e = eg_recount_db(txn, dbi, usage);
    if (e) {
      snprintf(err, errlen, "usage count of %s: %s", name, eg_err_msg(e));
      return e;
    }
  }
  return EG_OK;
}

/* ---- overrides ------------------------------------------------------------ */

eg_err eg_store_tenant_limits_get(eg_txn *t, const char *tenant, eg_tenant_limits_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t) || !out) return EG_EINVAL;
  eg_err e = eg_key_tenant(&k, tenant);
  if (e) return e;
  return eg_store__get_msg(t->txn, t->s->tenant_limits, &k, EG_TENANT_LIMITS_DESC,
                           (ProtobufCMessage **)out);
}

eg_err eg_store_tenant_limits_put(eg_txn *t, const char *tenant, const eg_tenant_limits_rec *rec) {
  eg_key k;
  if (!eg_txn_writable(t) || !rec) return EG_EINVAL;
  const Engram__Storage__V1__LimitOverride *v[] = {rec->calls_per_second, rec->writes_per_second,
                                                    rec->concurrent_calls, rec->storage_bytes};
  int any = 0;
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    if (v[i] && (!isfinite(v[i]->value) || v[i]->value < 0)) return EG_EINVAL;
    any |= v[i] != NULL;
  }
  eg_err e = eg_key_tenant(&k, tenant);
  if (e) return e;
  if (!any) return eg_store__del_quiet(t, t->s->tenant_limits, &k);
  return eg_store__put_msg(t, t->s->tenant_limits, &k, &rec->base, 0);
}

uint64_t eg_store_tenant_limits_gen(const eg_store *s) {
  return atomic_load_explicit(&s->limits_gen, memory_order_acquire) + 1;
}
