/* The users holding records, by name (storage/record_users.h). */
#include <string.h>

#include "storage/internal.h"
#include "storage/keys.h"

static MDB_dbi eg_users_dbi(const eg_store *s, unsigned source) {
  return source == EG_USERS_SESSIONS ? s->sessions_by_user
         : source == EG_USERS_MEMORIES ? s->memories_by_user
                                       : s->store_namespaces;
}

/* The length of the user prefix k starts with (u8len T | u8len U, or
 * u8len T for items), 0 when k is too short for it. */
static size_t eg_users_prefix_len(unsigned source, const uint8_t *k, size_t n) {
  if (n < 1 || (size_t)k[0] + 1 > n || k[0] == 0) return 0;
  size_t tl = 1 + (size_t)k[0];
  if (source == EG_USERS_ITEMS) return tl;
  if (tl >= n || k[tl] == 0 || tl + 1 + (size_t)k[tl] > n) return 0;
  return tl + 1 + (size_t)k[tl];
}

/* The least key above every key starting with p[0..n): p with its trailing
 * 0xff bytes dropped and the last one left incremented; *len 0 when there
 * is none (p is all 0xff). The layout's prefixes are length-prefixed, so
 * no other user's prefix lies between p and it. */
static void eg_users_successor(const uint8_t *p, size_t n, eg_key *out) {
  while (n && p[n - 1] == 0xff) n--;
  memcpy(out->buf, p, n);
  if (n) out->buf[n - 1]++;
  out->len = n;
}

eg_err eg_store_users_scan(eg_txn *t, unsigned source, const char *tenant,
                           const eg_users_cursor *after, size_t max, eg_user_visit_fn fn,
                           void *arg, int *end) {
  eg_key range, seek;
  MDB_cursor *c;
  MDB_val k, v;
  eg_err e = EG_OK;
  size_t seen = 0;
  int stopped = 0; /* by max or fn: users may follow */
  *end = 0;
  if (!eg_txn_readable(t) || !fn || !max || source >= EG_USERS_SOURCES ||
      (after && after->len > sizeof after->buf))
    return EG_EINVAL;
  eg_key_init(&range);
  if (tenant[0] && (e = eg_key_id(&range, tenant))) return e;
  seek = range;
  if (after && after->len) {
    eg_key next;
    eg_users_successor(after->buf, after->len, &next);
    if (!next.len) { /* nothing after it */
      *end = 1;
      return EG_OK;
    }
    /* The later of the two: a cursor of another tenant only moves the start. */
    size_t m = next.len < seek.len ? next.len : seek.len;
    int cmp = memcmp(next.buf, seek.buf, m);
    if (cmp > 0 || (cmp == 0 && next.len > seek.len)) seek = next;
  }
  int rc = mdb_cursor_open(t->txn, eg_users_dbi(t->s, source), &c);
  if (rc) return eg_store__err(rc);
  rc = seek.len ? eg_store__seek_at(c, &seek, &k, &v) : mdb_cursor_get(c, &k, &v, MDB_FIRST);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &range)) {
    if (seen == max) {
      stopped = 1;
      break;
    }
    const uint8_t *p = k.mv_data;
    size_t pl = eg_users_prefix_len(source, p, k.mv_size);
    if (!pl) {
      e = EG_ECORRUPT;
      break;
    }
    char tn[EG_STORE_ID_MAX + 1], un[EG_STORE_ID_MAX + 1];
    size_t tl = p[0], ul = source == EG_USERS_ITEMS ? 0 : p[1 + tl];
    if (tl > EG_STORE_ID_MAX || ul > EG_STORE_ID_MAX) {
      e = EG_ECORRUPT;
      break;
    }
    memcpy(tn, p + 1, tl);
    tn[tl] = '\0';
    memcpy(un, p + 2 + tl, ul);
    un[ul] = '\0';
    eg_users_cursor at = {.len = pl};
    memcpy(at.buf, p, pl);
    seen++;
    if (fn(arg, tn, un, &at)) {
      stopped = 1;
      break;
    }
    eg_users_successor(p, pl, &seek);
    if (!seek.len) {
      rc = MDB_NOTFOUND;
      break;
    }
    rc = eg_store__seek_at(c, &seek, &k, &v);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  *end = !rc && !e && !stopped;
  mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_store_user_holds(eg_txn *t, const char *tenant, const char *user, int *holds) {
  eg_key prefix;
  *holds = 0;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_key_init(&prefix);
  eg_err e = eg_key_id(&prefix, tenant);
  if (!e && user[0]) e = eg_key_id(&prefix, user);
  if (e) return e;
  for (unsigned src = 0; src < EG_USERS_SOURCES && !*holds; src++) {
    if ((src == EG_USERS_ITEMS) != !user[0]) continue;
    MDB_cursor *c;
    MDB_val k, v;
    int rc = mdb_cursor_open(t->txn, eg_users_dbi(t->s, src), &c);
    if (rc) return eg_store__err(rc);
    rc = eg_store__seek_at(c, &prefix, &k, &v);
    if (rc == MDB_SUCCESS) *holds = eg_key_has_prefix(k.mv_data, k.mv_size, &prefix);
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND) return eg_store__err(rc);
  }
  int erasing = 0;
  if (*holds && user[0] && (e = eg_store_user_erasing(t, tenant, user, &erasing))) return e;
  if (erasing) *holds = 0;
  return EG_OK;
}
