/* The key-value store: items, namespace counts and the expiry index (see
 * storage/store_items.h for the key layout). */
#include <stdlib.h>
#include <string.h>

#include "storage/internal.h"

#define EG_ITEM_DESC (&engram__storage__v1__store_item_record__descriptor)
/* The first byte of every expiry entry in store_items: no tenant range
 * starts with it (a tenant's length byte is at least 1). */
#define EG_EXPIRY_TAG 0x00
#define EG_NS_COUNTS_LEN 16
/* Expiry entries gathered before any is deleted (the cursor must not see
 * its own deletions): bounds the memory of one call whatever max. */
#define EG_EXPIRE_CHUNK 64

_Static_assert(1 + 8 + 1 + EG_STORE_ID_MAX + EG_STORE_NS_ENC_MAX + EG_STORE_KEY_MAX <= EG_KEY_MAX,
               "the longest expiry key fits an LMDB key");

/* ==== namespaces =============================================================== */

eg_err eg_store_ns_encode(char *const *labels, size_t n, int whole, eg_store_ns *out) {
  size_t total = 0;
  out->len = 0;
  if (n > EG_STORE_NS_LABELS_MAX || (whole && n == 0)) return EG_EINVAL;
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(labels[i]);
    if (len == 0 || len > EG_STORE_LABEL_MAX) return EG_EINVAL;
    total += len;
    if (total > EG_STORE_NS_BYTES_MAX) return EG_EINVAL;
    memcpy(out->buf + out->len, labels[i], len);
    out->len += len;
    out->buf[out->len++] = 0x00;
  }
  if (whole) out->buf[out->len++] = 0x00;
  return EG_OK;
}

int eg_store_ns_decode(const uint8_t *enc, size_t len, char *buf, char **labels, size_t max) {
  size_t n = 0, i = 0;
  while (i < len) {
    if (enc[i] == 0x00) return i + 1 == len && n > 0 ? (int)n : -1; /* the end byte */
    const uint8_t *z = memchr(enc + i, 0x00, len - i);
    if (!z || n == max) return -1;
    size_t l = (size_t)(z - (enc + i));
    memcpy(buf + i, enc + i, l);
    buf[i + l] = '\0';
    labels[n++] = buf + i;
    i += l + 1;
  }
  return (int)n; /* a prefix: no end byte */
}

/* ==== keys ======================================================================= */

static eg_err eg_key_item(eg_key *k, const char *tenant, const eg_store_ns *ns, const char *key) {
  eg_key_init(k);
  if (strlen(key) > EG_STORE_KEY_MAX) return EG_EINVAL;
  eg_err e = eg_key_id(k, tenant);
  if (!e) e = eg_key_raw(k, ns->buf, ns->len);
  return e ? e : eg_key_tail(k, key);
}

static eg_err eg_key_ns(eg_key *k, const char *tenant, const eg_store_ns *ns) {
  eg_key_init(k);
  eg_err e = eg_key_id(k, tenant);
  return e || !ns ? e : eg_key_raw(k, ns->buf, ns->len);
}

/* The expiry entry of the item at item key ik, due at due_us. */
static eg_err eg_key_expiry(eg_key *k, int64_t due_us, const eg_key *ik) {
  const uint8_t tag = EG_EXPIRY_TAG;
  if (due_us < 0) return EG_EINVAL;
  eg_key_init(k);
  eg_err e = eg_key_raw(k, &tag, 1);
  if (!e) e = eg_key_u64(k, (uint64_t)due_us);
  return e ? e : eg_key_raw(k, ik->buf, ik->len);
}

/* ==== counts ====================================================================== */

static eg_err eg_ns_counts_get(eg_txn *t, const eg_key *k, uint64_t *count, uint64_t *permanent) {
  MDB_val key = {k->len, (void *)k->buf}, v;
  *count = *permanent = 0;
  int rc = mdb_get(t->txn, t->s->store_namespaces, &key, &v);
  if (rc == MDB_NOTFOUND) return EG_OK;
  if (rc) return eg_store__err(rc);
  if (v.mv_size != EG_NS_COUNTS_LEN) return EG_ECORRUPT;
  *count = eg_be64_get(v.mv_data);
  *permanent = eg_be64_get((const uint8_t *)v.mv_data + 8);
  return EG_OK;
}

/* Adds dc items and dp permanent ones (each -1, 0 or 1) to the counts of
 * (tenant, ns); the entry goes when no item is left. */
static eg_err eg_ns_counts_add(eg_txn *t, const char *tenant, const eg_store_ns *ns, int dc,
                               int dp) {
  eg_key k;
  uint64_t c, p;
  uint8_t v[EG_NS_COUNTS_LEN];
  if (!dc && !dp) return EG_OK;
  eg_err e = eg_key_ns(&k, tenant, ns);
  if (!e) e = eg_ns_counts_get(t, &k, &c, &p);
  if (e) return e;
  if ((dc < 0 && c == 0) || (dp < 0 && p == 0)) return EG_ECORRUPT; /* counts lost an item */
  c += (uint64_t)(int64_t)dc;
  p += (uint64_t)(int64_t)dp;
  if (c == 0) return eg_store__del_quiet(t, t->s->store_namespaces, &k);
  eg_be64_put(v, c);
  eg_be64_put(v + 8, p);
  return eg_store__put(t, t->s->store_namespaces, &k, v, sizeof v);
}

/* ==== items ========================================================================= */

eg_err eg_store_item_get(eg_txn *t, const char *tenant, const eg_store_ns *ns, const char *key,
                         eg_item_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_item(&k, tenant, ns, key);
  if (e) return e;
  return eg_store__get_msg(t->txn, t->s->store_items, &k, EG_ITEM_DESC, (ProtobufCMessage **)out);
}

static eg_err eg_item_check(const eg_item_rec *rec) {
  if (!rec || rec->create_time_us < 0 || rec->update_time_us < 0 || rec->expire_time_us < 0 ||
      rec->ttl_seconds < 0 || !eg_store__u64_ascending(rec->value_hashes, rec->n_value_hashes))
    return EG_EINVAL;
  return EG_OK;
}

/* Moves the expiry entry of the item at ik from old_us to new_us (0: none). */
static eg_err eg_expiry_move(eg_txn *t, const eg_key *ik, int64_t old_us, int64_t new_us) {
  eg_key k;
  eg_err e = EG_OK;
  if (old_us == new_us) return EG_OK;
  if (old_us && !(e = eg_key_expiry(&k, old_us, ik))) e = eg_store__del_quiet(t, t->s->store_items, &k);
  if (!e && new_us && !(e = eg_key_expiry(&k, new_us, ik))) e = eg_store__put(t, t->s->store_items, &k, "", 0);
  return e;
}

eg_err eg_store_item_put(eg_txn *t, const char *tenant, const eg_store_ns *ns, const char *key,
                         const eg_item_rec *rec, const eg_item_rec *prev) {
  eg_key k;
  if (!eg_txn_writable(t) || eg_item_check(rec) || (prev && eg_item_check(prev))) return EG_EINVAL;
  eg_err e = eg_key_item(&k, tenant, ns, key);
  if (!e) e = eg_store__put_msg(t, t->s->store_items, &k, &rec->base, prev ? 0 : MDB_NOOVERWRITE);
  if (!e) e = eg_expiry_move(t, &k, prev ? prev->expire_time_us : 0, rec->expire_time_us);
  if (e) return e;
  int was = prev && prev->expire_time_us == 0, is = rec->expire_time_us == 0;
  return eg_ns_counts_add(t, tenant, ns, prev ? 0 : 1, is - was);
}

eg_err eg_store_item_delete(eg_txn *t, const char *tenant, const eg_store_ns *ns, const char *key,
                            const eg_item_rec *prev) {
  eg_key k;
  if (!eg_txn_writable(t) || eg_item_check(prev)) return EG_EINVAL;
  eg_err e = eg_key_item(&k, tenant, ns, key);
  if (!e) e = eg_store__del(t, t->s->store_items, &k);
  if (!e) e = eg_expiry_move(t, &k, prev->expire_time_us, 0);
  return e ? e : eg_ns_counts_add(t, tenant, ns, -1, prev->expire_time_us == 0 ? -1 : 0);
}

/* ==== scans ============================================================================ */

/* The length of the ns-enc at the start of p[0..n) (through its end byte),
 * or 0 if there is none. */
static size_t eg_ns_enc_len(const uint8_t *p, size_t n) {
  for (size_t i = 0; i + 1 < n; i++)
    if (p[i] == 0x00 && p[i + 1] == 0x00) return i + 2;
  return 0;
}

eg_err eg_store_items_scan(eg_txn *t, const char *tenant, const eg_store_ns *prefix, size_t max,
                           eg_item_visit_fn fn, void *arg, int *more) {
  eg_key range;
  MDB_cursor *c = NULL;
  MDB_val k, v;
  char key[EG_STORE_KEY_MAX + 1];
  size_t seen = 0;
  if (more) *more = 0;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_err e = eg_key_ns(&range, tenant, prefix);
  if (e) return e;
  const size_t tlen = 1 + (size_t)range.buf[0];
  int rc = mdb_cursor_open(t->txn, t->s->store_items, &c);
  if (rc) return eg_store__err(rc);
  rc = eg_store__seek_at(c, &range, &k, &v);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &range)) {
    if (seen == max) {
      if (more) *more = 1;
      break;
    }
    const uint8_t *p = (const uint8_t *)k.mv_data + tlen;
    size_t n = k.mv_size - tlen, nslen = eg_ns_enc_len(p, n);
    if (!nslen || n - nslen > EG_STORE_KEY_MAX || n == nslen) {
      e = EG_ECORRUPT;
      break;
    }
    memcpy(key, p + nslen, n - nslen);
    key[n - nslen] = '\0';
    eg_item_rec *rec;
    if ((e = eg_store__decode(EG_ITEM_DESC, &v, (ProtobufCMessage **)&rec))) break;
    eg_item_ref ref = {.ns = p, .ns_len = nslen, .key = key};
    seen++;
    int stop = fn(arg, &ref, rec);
    engram__storage__v1__store_item_record__free_unpacked(rec, NULL);
    if (stop) break;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_store_namespaces_scan(eg_txn *t, const char *tenant, const eg_store_ns *from,
                                const eg_store_ns *within, eg_ns_visit_fn fn, void *arg) {
  eg_key range, seek;
  MDB_cursor *c = NULL;
  MDB_val k, v;
  eg_store_ns next;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_err e = eg_key_ns(&range, tenant, within);
  if (!e) e = eg_key_ns(&seek, tenant, from);
  if (e) return e;
  const size_t tlen = 1 + (size_t)range.buf[0];
  int rc = mdb_cursor_open(t->txn, t->s->store_namespaces, &c);
  if (rc) return eg_store__err(rc);
  rc = eg_store__seek_at(c, &seek, &k, &v);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &range)) {
    if (v.mv_size != EG_NS_COUNTS_LEN || k.mv_size <= tlen) {
      e = EG_ECORRUPT;
      break;
    }
    const uint8_t *p = (const uint8_t *)k.mv_data + tlen;
    int r = fn(arg, p, k.mv_size - tlen, eg_be64_get(v.mv_data),
               eg_be64_get((const uint8_t *)v.mv_data + 8), &next);
    if (r == 1) break;
    if (r == 2) {
      if ((e = eg_key_ns(&seek, tenant, &next))) break;
      rc = eg_store__seek_at(c, &seek, &k, &v);
    } else {
      rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

/* ==== expiry ============================================================================ */

typedef struct {
  eg_key keys[EG_EXPIRE_CHUNK];
  size_t n;
} eg_expiry_batch;

/* Gathers up to max expiry entries due before before_us into b (NULL:
 * only counts them), their number into *n; *left when one more is due. */
static eg_err eg_expiry_collect(eg_txn *t, int64_t before_us, size_t max, eg_expiry_batch *b,
                                size_t *n, int *left) {
  MDB_cursor *c = NULL;
  MDB_val k, v;
  eg_key tag = {.buf = {EG_EXPIRY_TAG}, .len = 1};
  *n = 0;
  *left = 0;
  int rc = mdb_cursor_open(t->txn, t->s->store_items, &c);
  if (rc) return eg_store__err(rc);
  rc = eg_store__seek_at(c, &tag, &k, &v);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &tag)) {
    if (k.mv_size < 1 + 8 + 1 || k.mv_size > EG_KEY_MAX) {
      rc = MDB_CORRUPTED;
      break;
    }
    /* Entries sort by due time: the first one not due ends the walk. */
    if (eg_be64_get((const uint8_t *)k.mv_data + 1) >= (uint64_t)before_us) break;
    if (*n == max) {
      *left = 1;
      break;
    }
    if (b) {
      memcpy(b->keys[*n].buf, k.mv_data, k.mv_size);
      b->keys[*n].len = k.mv_size;
    }
    ++*n;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  mdb_cursor_close(c);
  return eg_store__err(rc);
}

/* Deletes the item expiry entry x names, if it is still due then (the
 * entry moves with every put, so it always is). */
static eg_err eg_expire_one(eg_txn *t, const eg_key *x, uint64_t *n) {
  eg_key ik;
  eg_store_ns ns;
  char tenant[EG_STORE_ID_MAX + 1], key[EG_STORE_KEY_MAX + 1];
  const uint8_t *p = x->buf + 9;
  size_t left = x->len - 9, tl = p[0];
  if (tl == 0 || tl + 1 > left) return EG_ECORRUPT;
  memcpy(tenant, p + 1, tl);
  tenant[tl] = '\0';
  p += 1 + tl;
  left -= 1 + tl;
  ns.len = eg_ns_enc_len(p, left);
  if (!ns.len || ns.len > EG_STORE_NS_ENC_MAX || left - ns.len > EG_STORE_KEY_MAX ||
      left == ns.len)
    return EG_ECORRUPT;
  memcpy(ns.buf, p, ns.len);
  memcpy(key, p + ns.len, left - ns.len);
  key[left - ns.len] = '\0';
  eg_item_rec *rec = NULL;
  eg_err e = eg_key_item(&ik, tenant, &ns, key);
  if (!e) e = eg_store__get_msg(t->txn, t->s->store_items, &ik, EG_ITEM_DESC, (ProtobufCMessage **)&rec);
  if (e == EG_ENOTFOUND) return eg_store__del(t, t->s->store_items, x); /* a stray entry */
  if (e) return e;
  if ((uint64_t)rec->expire_time_us == eg_be64_get(x->buf + 1)) {
    e = eg_store_item_delete(t, tenant, &ns, key, rec);
    if (!e) (*n)++;
  } else {
    e = eg_store__del(t, t->s->store_items, x);
  }
  engram__storage__v1__store_item_record__free_unpacked(rec, NULL);
  return e;
}

eg_err eg_store_items_expire(eg_txn *t, int64_t before_us, size_t max, uint64_t *n, int *more) {
  *n = 0;
  *more = 0;
  if (!eg_txn_writable(t)) return EG_EINVAL;
  if (before_us <= 0) return EG_OK;
  eg_expiry_batch *b = malloc(sizeof *b);
  if (!b) return EG_ENOMEM;
  eg_err e = EG_OK;
  size_t done = 0;
  while (!e && done < max) {
    size_t want = max - done < EG_EXPIRE_CHUNK ? max - done : EG_EXPIRE_CHUNK;
    int left;
    if ((e = eg_expiry_collect(t, before_us, want, b, &b->n, &left))) break;
    for (size_t i = 0; !e && i < b->n; i++) e = eg_expire_one(t, &b->keys[i], n);
    done += b->n;
    *more = left;
    if (!left) break;
  }
  free(b);
  return e;
}

eg_err eg_store_items_expiring(eg_txn *t, int64_t before_us, size_t max, uint64_t *n) {
  size_t got = 0;
  int left;
  *n = 0;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  if (before_us <= 0) return EG_OK;
  eg_err e = eg_expiry_collect(t, before_us, max, NULL, &got, &left);
  *n = got;
  return e;
}

/* ==== a tenant's erasure ================================================================= */

eg_err eg_store__erase_tenant_items(eg_txn *t, const char *tenant, uint64_t budget,
                                    uint64_t *spent, uint64_t *n, int *left) {
  eg_key prefix, ik, xk;
  eg_err e = eg_key_ns(&prefix, tenant, NULL);
  *left = 0;
  while (!e) {
    MDB_cursor *c;
    MDB_val k = {prefix.len, prefix.buf}, v;
    eg_item_rec *rec = NULL;
    int rc = mdb_cursor_open(t->txn, t->s->store_items, &c);
    if (rc) return eg_store__err(rc);
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && !eg_key_has_prefix(k.mv_data, k.mv_size, &prefix)) rc = MDB_NOTFOUND;
    if (rc == MDB_SUCCESS && k.mv_size > EG_KEY_MAX) e = EG_ECORRUPT;
    if (rc == MDB_SUCCESS && !e) {
      memcpy(ik.buf, k.mv_data, ik.len = k.mv_size);
      e = eg_store__decode(EG_ITEM_DESC, &v, (ProtobufCMessage **)&rec);
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) return EG_OK;
    if (rc) return eg_store__err(rc);
    if (e) return e;
    if (*spent >= budget) {
      engram__storage__v1__store_item_record__free_unpacked(rec, NULL);
      return *left = 1, EG_OK;
    }
    /* The item's entry in the cross-tenant expiry index goes with it: the
     * index is not under the tenant's range. */
    int64_t due = rec->expire_time_us;
    engram__storage__v1__store_item_record__free_unpacked(rec, NULL);
    if (due && !(e = eg_key_expiry(&xk, due, &ik)) &&
        !(e = eg_store__del(t, t->s->store_items, &xk)) && n)
      ++*n;
    if (!e) e = eg_store__del(t, t->s->store_items, &ik);
    ++*spent;
    if (n) ++*n;
  }
  return e;
}
