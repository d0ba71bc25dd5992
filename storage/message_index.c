/* The message keyword index (storage/message_index.h): postings and stats
 * as message writers and deleters keep them, the postings scan, reindex,
 * the message walk and the index state. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cmp.h"
#include "storage/internal.h"

#define EG_MESSAGE_DESC (&engram__storage__v1__message_record__descriptor)
#define EG_INDEX_STATE_DESC (&engram__storage__v1__index_state_record__descriptor)

enum { EG_POSTING_LAYOUT = 1, EG_POSTING_LEN = 8, EG_STATS_LEN = 16 };

static void eg_le32_put(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++, v >>= 8) p[i] = (uint8_t)v;
}
static uint32_t eg_le32_get(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void eg_le64_put(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++, v >>= 8) p[i] = (uint8_t)v;
}
static uint64_t eg_le64_get(const uint8_t *p) {
  return (uint64_t)eg_le32_get(p) | (uint64_t)eg_le32_get(p + 4) << 32;
}

static int eg_indexed(const eg_message_rec *rec) { return rec->index_version != 0; }

eg_err eg_store__message_terms_check(const eg_message_rec *rec) {
  eg_key k;
  eg_key_init(&k);
  /* Terms without a version would be postings no delete path looks for. */
  if (!eg_indexed(rec)) return rec->n_index_terms || rec->index_tf.len ? EG_EINVAL : EG_OK;
  if (rec->n_index_terms > EG_MESSAGE_TERMS_MAX || rec->index_tf.len != rec->n_index_terms ||
      rec->role < 0 || rec->role > 255 || rec->create_time_us < 0)
    return EG_EINVAL;
  return eg_key_id(&k, rec->index_user_id);
}

/* ---- stats ------------------------------------------------------------------ */

/* Adds (dm, dw) to the stats row k, saturating at 0 (a row that disagrees
 * with the postings must not stop a delete); a row left with no message
 * goes. */
static eg_err eg_stats_row_add(eg_txn *t, const eg_key *k, int64_t dm, int64_t dw) {
  MDB_val key = {k->len, (void *)k->buf}, v;
  uint64_t m = 0, w = 0;
  int rc = mdb_get(t->txn, t->s->message_index_stats, &key, &v);
  if (rc && rc != MDB_NOTFOUND) return eg_store__err(rc);
  if (!rc) {
    if (v.mv_size != EG_STATS_LEN) return EG_ECORRUPT;
    m = eg_le64_get(v.mv_data);
    w = eg_le64_get((const uint8_t *)v.mv_data + 8);
  }
  m = dm < 0 && (uint64_t)-dm > m ? 0 : m + (uint64_t)dm;
  w = dw < 0 && (uint64_t)-dw > w ? 0 : w + (uint64_t)dw;
  if (m == 0) return rc ? EG_OK : eg_store__del(t, t->s->message_index_stats, k);
  uint8_t b[EG_STATS_LEN];
  eg_le64_put(b, m);
  eg_le64_put(b + 8, w);
  return eg_store__put(t, t->s->message_index_stats, k, b, sizeof b);
}

/* Adds (dm, dw) to the stats of user_id and of the tenant. */
static eg_err eg_stats_add(eg_txn *t, const char *tenant, const char *user_id, int64_t dm,
                           int64_t dw) {
  eg_key uk, tk;
  if (!dm && !dw) return EG_OK;
  eg_err e = eg_key_user(&uk, tenant, user_id);
  if (!e) e = eg_key_tenant(&tk, tenant);
  if (!e) e = eg_stats_row_add(t, &uk, dm, dw);
  return e ? e : eg_stats_row_add(t, &tk, dm, dw);
}

eg_err eg_store_message_index_stats(eg_txn *t, const char *tenant, const char *user_id,
                                    uint64_t *messages, uint64_t *words) {
  eg_key k;
  MDB_val key, v;
  if (!eg_txn_readable(t) || !messages || !words) return EG_EINVAL;
  eg_err e = user_id ? eg_key_user(&k, tenant, user_id) : eg_key_tenant(&k, tenant);
  if (e) return e;
  key = (MDB_val){k.len, k.buf};
  int rc = mdb_get(t->txn, t->s->message_index_stats, &key, &v);
  *messages = *words = 0;
  if (rc == MDB_NOTFOUND) return EG_OK;
  if (rc) return eg_store__err(rc);
  if (v.mv_size != EG_STATS_LEN) return EG_ECORRUPT;
  *messages = eg_le64_get(v.mv_data);
  *words = eg_le64_get((const uint8_t *)v.mv_data + 8);
  return EG_OK;
}

/* ---- postings in and out ---------------------------------------------------- */

static eg_err eg_posting_key(eg_key *k, const char *tenant, const char *sid,
                             const eg_message_rec *rec, uint64_t term) {
  return eg_key_message_term(k, tenant, term, rec->index_user_id, (uint64_t)rec->create_time_us,
                             sid, (uint64_t)rec->seq);
}

static eg_err eg_postings_put(eg_txn *t, const char *tenant, const char *sid,
                              const eg_message_rec *rec) {
  eg_key k;
  uint8_t b[EG_POSTING_LEN] = {EG_POSTING_LAYOUT, (uint8_t)rec->role, 0, 0};
  eg_le32_put(b + 4, rec->index_words);
  for (size_t i = 0; i < rec->n_index_terms; i++) {
    b[2] = rec->index_tf.data[i];
    eg_err e = eg_posting_key(&k, tenant, sid, rec, rec->index_terms[i]);
    if (!e) e = eg_store__put(t, t->s->message_terms, &k, b, sizeof b);
    if (e) return e;
  }
  return EG_OK;
}

eg_err eg_store__message_terms_put(eg_txn *t, const char *tenant, const char *sid,
                                   const eg_message_rec *rec) {
  if (!eg_indexed(rec)) return EG_OK;
  eg_err e = eg_postings_put(t, tenant, sid, rec);
  return e ? e : eg_stats_add(t, tenant, rec->index_user_id, 1, rec->index_words);
}

eg_err eg_store__message_terms_len(const eg_store *s, const char *tenant, const char *sid,
                                   const eg_message_rec *rec, size_t *len) {
  eg_key k;
  *len = 0;
  eg_err e = eg_store__message_terms_check(rec);
  if (e || !eg_indexed(rec)) return e;
  /* Every posting key of one message has the same length. */
  if ((e = eg_posting_key(&k, tenant, sid, rec, 0))) return e;
  *len = rec->n_index_terms * eg_wal__put_len(s, s->message_terms, k.len, EG_POSTING_LEN);
  return EG_OK;
}

eg_err eg_store__message_debt_settle(eg_txn *t, const char *tenant, eg_message_debt *d) {
  if (!d->messages) return EG_OK;
  eg_err e = eg_stats_add(t, tenant, d->user, -(int64_t)d->messages, -(int64_t)d->words);
  d->messages = d->words = 0;
  return e;
}

eg_err eg_store__message_terms_del(eg_txn *t, const char *tenant, const char *sid,
                                   const eg_message_rec *rec, eg_message_debt *d, uint64_t *n) {
  eg_key k;
  if (!eg_indexed(rec)) return EG_OK;
  /* A stored record put checked: one that fails now was damaged. */
  if (eg_store__message_terms_check(rec)) return EG_ECORRUPT;
  for (size_t i = 0; i < rec->n_index_terms; i++) {
    eg_err e = eg_posting_key(&k, tenant, sid, rec, rec->index_terms[i]);
    /* A posting already gone is what the delete wants anyway. */
    if (!e) e = eg_store__del_quiet(t, t->s->message_terms, &k);
    if (e) return e;
  }
  if (n) *n += rec->n_index_terms;
  if (d->messages && strcmp(d->user, rec->index_user_id) != 0) {
    eg_err e = eg_store__message_debt_settle(t, tenant, d);
    if (e) return e;
  }
  /* eg_posting_key accepted the id: it fits. */
  snprintf(d->user, sizeof d->user, "%s", rec->index_user_id);
  d->messages++;
  d->words += rec->index_words;
  return EG_OK;
}

struct eg_unindex {
  eg_txn *t;
  const char *tenant, *sid;
  eg_message_debt d;
  eg_err e;
};

static int eg_unindex_one(void *arg, eg_message_rec *rec) {
  struct eg_unindex *u = arg;
  u->e = eg_store__message_terms_del(u->t, u->tenant, u->sid, rec, &u->d, NULL);
  protobuf_c_message_free_unpacked(&rec->base, NULL);
  return u->e != EG_OK;
}

eg_err eg_store__session_postings_del(eg_txn *t, const char *tenant, const char *sid) {
  struct eg_unindex u = {.t = t, .tenant = tenant, .sid = sid};
  eg_err e = eg_store_messages_scan(t, tenant, sid, 0, 0, eg_unindex_one, &u);
  if (!e) e = u.e;
  eg_err se = eg_store__message_debt_settle(t, tenant, &u.d);
  return e ? e : se;
}

/* ---- reindex ---------------------------------------------------------------- */

eg_err eg_store_message_reindex(eg_txn *t, const char *tenant, const char *session_id,
                                const eg_message_rec *prev, const eg_message_rec *rec) {
  eg_key mk, pk;
  uint64_t terms[EG_MESSAGE_TERMS_MAX];
  if (!eg_txn_writable(t) || !prev || !rec || rec->seq < 0) return EG_EINVAL;
  assert(rec->base.descriptor == EG_MESSAGE_DESC);
  /* Same message: its keys (message, sweep entry, postings) stay put. */
  if (prev->seq != rec->seq || prev->create_time_us != rec->create_time_us) return EG_EINVAL;
  eg_err e = eg_store__message_terms_check(rec);
  if (!e) e = eg_key_message(&mk, tenant, session_id, (uint64_t)rec->seq);
  if (e) return e;
  if (eg_store__message_terms_check(prev)) return EG_ECORRUPT;
  /* Keys rec puts again are overwritten, not deleted first: one op each in
   * the log, not two. */
  int same_user = eg_indexed(prev) && eg_indexed(rec) &&
                  strcmp(prev->index_user_id, rec->index_user_id) == 0;
  size_t n = same_user ? rec->n_index_terms : 0;
  if (n) {
    memcpy(terms, rec->index_terms, n * sizeof *terms);
    qsort(terms, n, sizeof *terms, eg_u64_cmp);
  }
  for (size_t i = 0; eg_indexed(prev) && i < prev->n_index_terms; i++) {
    if (bsearch(&prev->index_terms[i], terms, n, sizeof *terms, eg_u64_cmp)) continue;
    if ((e = eg_posting_key(&pk, tenant, session_id, prev, prev->index_terms[i])) ||
        (e = eg_store__del_quiet(t, t->s->message_terms, &pk)))
      return e;
  }
  if (eg_indexed(rec) && (e = eg_postings_put(t, tenant, session_id, rec))) return e;
  if (same_user) {
    e = eg_stats_add(t, tenant, rec->index_user_id, 0,
                     (int64_t)rec->index_words - (int64_t)prev->index_words);
  } else {
    if (eg_indexed(prev))
      e = eg_stats_add(t, tenant, prev->index_user_id, -1, -(int64_t)prev->index_words);
    if (!e && eg_indexed(rec))
      e = eg_stats_add(t, tenant, rec->index_user_id, 1, rec->index_words);
  }
  return e ? e : eg_store__put_msg(t, t->s->messages, &mk, &rec->base, 0);
}

/* ---- postings scan ------------------------------------------------------------ */

/* Decodes the posting k -> v of the term whose prefix is tlen bytes. */
static eg_err eg_posting_parse(const MDB_val *k, const MDB_val *v, size_t tlen,
                               eg_message_posting *p) {
  const uint8_t *b = (const uint8_t *)k->mv_data + tlen, *val = v->mv_data;
  size_t left = k->mv_size - tlen;
  if (left < 1 || b[0] == 0 || b[0] > EG_STORE_ID_MAX || left < 1u + b[0] + 8 + 1)
    return EG_ECORRUPT;
  p->user_len = b[0];
  p->user_id = (const char *)b + 1;
  b += 1 + p->user_len;
  left -= 1 + p->user_len;
  uint64_t create = eg_be64_get(b);
  b += 8;
  left -= 8;
  if (create > INT64_MAX || b[0] == 0 || b[0] > EG_STORE_ID_MAX || left != 1u + b[0] + 8)
    return EG_ECORRUPT;
  p->create_us = (int64_t)create;
  p->session_len = b[0];
  p->session_id = (const char *)b + 1;
  p->seq = eg_be64_get(b + 1 + p->session_len);
  if (v->mv_size != EG_POSTING_LEN || val[0] != EG_POSTING_LAYOUT || val[3] != 0)
    return EG_ECORRUPT;
  p->role = val[1];
  p->tf = val[2];
  p->words = eg_le32_get(val + 4);
  return EG_OK;
}

/* One user's postings in a read: its cursor on the user's newest posting
 * not visited yet, that posting (decoded), and the user's id. */
typedef struct {
  MDB_cursor *c;
  eg_message_posting p;
  size_t ulen;
  char user[EG_STORE_ID_MAX];
} eg_posting_src;

/* The users of a read that have a posting left: src[0..n); src[n] may
 * hold a spare cursor (a user found with none in range gives its cursor to
 * the next). One user's read needs no allocation (inline). */
typedef struct {
  eg_posting_src *src;
  size_t n, cap;
  eg_posting_src inline_src[2];
} eg_src_set;

struct eg_posting_walk {
  MDB_txn *txn;
  MDB_dbi dbi;
  const eg_key *tprefix; /* tenant | term */
  size_t tlen;           /* its length */
  uint64_t from, to;     /* [from, to) */
  size_t max_users;      /* users NULL: most users enumerated */
  eg_message_posting_fn fn;
  void *arg;
};

/* Takes the posting the cursor of src moved to (rc: the move's LMDB code)
 * when it is src's user's and created at or after from: *has 1 if so. */
static eg_err eg_src_take(const struct eg_posting_walk *w, eg_posting_src *src, int rc,
                          const MDB_val *k, const MDB_val *v, int *has) {
  *has = 0;
  if (rc == MDB_NOTFOUND) return EG_OK;
  if (rc) return eg_store__err(rc);
  if (!eg_key_has_prefix(k->mv_data, k->mv_size, w->tprefix)) return EG_OK;
  eg_err e = eg_posting_parse(k, v, w->tlen, &src->p);
  if (e) return e;
  if (src->p.user_len != src->ulen || memcmp(src->p.user_id, src->user, src->ulen) != 0 ||
      (uint64_t)src->p.create_us < w->from)
    return EG_OK;
  *has = 1;
  return EG_OK;
}

/* Positions src on the newest posting under uprefix (tenant | term | user)
 * created in [from, to). */
static eg_err eg_src_seek(const struct eg_posting_walk *w, eg_posting_src *src,
                          const eg_key *uprefix, int *has) {
  eg_key seek = *uprefix;
  MDB_val k, v;
  src->ulen = uprefix->len - w->tlen - 1;
  if (src->ulen == 0 || src->ulen > EG_STORE_ID_MAX) return EG_ECORRUPT;
  memcpy(src->user, uprefix->buf + w->tlen + 1, src->ulen);
  eg_err e = eg_key_u64(&seek, w->to);
  if (e) return e;
  /* Below uprefix | to: exactly the user's postings created before to. */
  int rc = eg_store__seek_below(src->c, &seek, 0, &k, &v);
  return eg_src_take(w, src, rc, &k, &v, has);
}

static eg_err eg_src_step(const struct eg_posting_walk *w, eg_posting_src *src, int *has) {
  MDB_val k, v;
  int rc = mdb_cursor_get(src->c, &k, &v, MDB_PREV);
  return eg_src_take(w, src, rc, &k, &v, has);
}

/* 1 if a's posting is read before b's (a and b are two users): newer, or
 * as new and of the greater user id in key order (length, then bytes). */
static int eg_src_before(const eg_posting_src *a, const eg_posting_src *b) {
  if (a->p.create_us != b->p.create_us) return a->p.create_us > b->p.create_us;
  if (a->ulen != b->ulen) return a->ulen > b->ulen;
  return memcmp(a->user, b->user, a->ulen) > 0;
}

static void eg_src_set_init(eg_src_set *set) {
  memset(set, 0, sizeof *set);
  set->src = set->inline_src;
  set->cap = sizeof set->inline_src / sizeof set->inline_src[0];
}

static void eg_src_set_free(eg_src_set *set) {
  for (size_t i = 0; i < set->cap; i++)
    if (set->src[i].c) mdb_cursor_close(set->src[i].c);
  if (set->src != set->inline_src) free(set->src);
}

/* Adds the user under uprefix to the read when it has a posting in range. */
static eg_err eg_src_set_add(const struct eg_posting_walk *w, eg_src_set *set,
                             const eg_key *uprefix) {
  if (set->n + 1 == set->cap) {
    size_t cap = set->cap * 2;
    eg_posting_src *p = set->src == set->inline_src ? malloc(cap * sizeof *p)
                                                    : realloc(set->src, cap * sizeof *p);
    if (!p) return EG_ENOMEM;
    if (set->src == set->inline_src) memcpy(p, set->inline_src, sizeof set->inline_src);
    memset(p + set->cap, 0, (cap - set->cap) * sizeof *p);
    set->src = p;
    set->cap = cap;
  }
  eg_posting_src *src = &set->src[set->n];
  int has, rc = src->c ? 0 : mdb_cursor_open(w->txn, w->dbi, &src->c);
  if (rc) return eg_store__err(rc);
  eg_err e = eg_src_seek(w, src, uprefix, &has);
  if (!e && has) set->n++;
  return e;
}

/* Adds every user holding the term (the first w->max_users
 * in key order; *cut set when there are more), one seek each. */
static eg_err eg_src_set_tenant(const struct eg_posting_walk *w, eg_src_set *set, int *cut,
                                size_t *read) {
  /* Past every posting of one user: create times are below 2^63, so their
   * first byte is below 0xff. */
  static const uint8_t past = 0xff;
  eg_key seek = *w->tprefix, uprefix;
  MDB_cursor *c;
  MDB_val k, v;
  eg_err e = EG_OK;
  size_t users = 0;
  int rc = mdb_cursor_open(w->txn, w->dbi, &c);
  if (rc) return eg_store__err(rc);
  rc = eg_store__seek_at(c, &seek, &k, &v);
  while (!e && rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, w->tprefix)) {
    const uint8_t *b = k.mv_data;
    size_t ulen = k.mv_size > w->tlen ? b[w->tlen] : 0;
    if (ulen == 0 || k.mv_size < w->tlen + 1 + ulen) {
      e = EG_ECORRUPT;
      break;
    }
    if (users++ == w->max_users) {
      *cut = 1;
      break;
    }
    eg_key_init(&uprefix);
    if ((e = eg_key_raw(&uprefix, b, w->tlen + 1 + ulen)) || (e = eg_src_set_add(w, set, &uprefix)))
      break;
    seek = uprefix;
    if ((e = eg_key_raw(&seek, &past, 1))) break;
    rc = eg_store__seek_at(c, &seek, &k, &v);
    /* A key of this user past the seek holds no valid create time. */
    if (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &uprefix)) e = EG_ECORRUPT;
  }
  mdb_cursor_close(c);
  *read = users > w->max_users ? w->max_users : users;
  if (e) return e;
  return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? EG_OK : eg_store__err(rc);
}

static void eg_heap_down(const eg_posting_src *src, uint32_t *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && eg_src_before(&src[h[l]], &src[h[m]])) m = l;
    if (r < n && eg_src_before(&src[h[r]], &src[h[m]])) m = r;
    if (m == i) return;
    uint32_t x = h[i];
    h[i] = h[m];
    h[m] = x;
    i = m;
  }
}

/* Visits the set's postings newest first: a heap of its users by their
 * next posting; the top one is visited, its cursor steps back. */
static eg_err eg_src_set_merge(const struct eg_posting_walk *w, eg_src_set *set) {
  uint32_t few[2], *h = few;
  size_t n = set->n;
  eg_err e = EG_OK;
  if (n > sizeof few / sizeof few[0] && !(h = malloc(n * sizeof *h))) return EG_ENOMEM;
  for (size_t i = 0; i < n; i++) h[i] = (uint32_t)i;
  for (size_t i = n / 2; i-- > 0;) eg_heap_down(set->src, h, n, i);
  while (n) {
    eg_posting_src *top = &set->src[h[0]];
    int has;
    if (w->fn(w->arg, &top->p) || (e = eg_src_step(w, top, &has))) break;
    if (!has) h[0] = h[--n];
    eg_heap_down(set->src, h, n, 0);
  }
  if (h != few) free(h);
  return e;
}

eg_err eg_store_message_postings(eg_txn *t, const char *tenant, const char *const *users,
                                 size_t n_users, size_t max_users, uint64_t term, int64_t from_us,
                                 int64_t to_us, eg_message_posting_fn fn, void *arg,
                                 int *users_cut, size_t *users_read) {
  eg_key prefix, uprefix;
  size_t read = 0;
  if (users_read) *users_read = 0;
  if (!eg_txn_readable(t) || !fn || !users_cut || from_us < 0 || to_us < 0 ||
      (users && n_users > EG_MESSAGE_MERGE_USERS_MAX) || max_users > EG_MESSAGE_MERGE_USERS_MAX)
    return EG_EINVAL;
  *users_cut = 0;
  for (size_t i = 1; users && i < n_users; i++)
    if (!users[i - 1] || !users[i] || strcmp(users[i - 1], users[i]) >= 0) return EG_EINVAL;
  eg_err e = eg_key_term_range(&prefix, tenant, term);
  if (e) return e;
  struct eg_posting_walk w = {.txn = t->txn,
                              .dbi = t->s->message_terms,
                              .tprefix = &prefix,
                              .tlen = prefix.len,
                              .from = (uint64_t)from_us,
                              .to = to_us ? (uint64_t)to_us : UINT64_MAX,
                              .max_users = max_users,
                              .fn = fn,
                              .arg = arg};
  if (w.from >= w.to || (users && !n_users)) return EG_OK;
  eg_src_set set;
  eg_src_set_init(&set);
  if (!users) e = eg_src_set_tenant(&w, &set, users_cut, &read);
  if (users_read) *users_read = read;
  for (size_t i = 0; users && !e && i < n_users; i++)
    if (!(e = eg_key_message_term_user(&uprefix, tenant, term, users[i])))
      e = eg_src_set_add(&w, &set, &uprefix);
  if (!e) e = eg_src_set_merge(&w, &set);
  eg_src_set_free(&set);
  return e;
}

/* ---- the message walk ------------------------------------------------------- */

/* The tenant and session id of a messages key, NUL-terminated, into the
 * two buffers (EG_STORE_ID_MAX + 1 bytes each). */
static eg_err eg_message_key_parse(const MDB_val *k, char *tenant, char *sid) {
  const uint8_t *b = k->mv_data;
  size_t tl = k->mv_size ? b[0] : 0;
  if (tl == 0 || tl > EG_STORE_ID_MAX || k->mv_size < 2 + tl) return EG_ECORRUPT;
  size_t sl = b[1 + tl];
  if (sl == 0 || sl > EG_STORE_ID_MAX || k->mv_size != 2 + tl + sl + 8) return EG_ECORRUPT;
  memcpy(tenant, b + 1, tl);
  tenant[tl] = '\0';
  memcpy(sid, b + 2 + tl, sl);
  sid[sl] = '\0';
  return EG_OK;
}

eg_err eg_store_messages_walk(eg_txn *t, const uint8_t *after, size_t after_len, size_t max,
                              eg_message_walk_fn fn, void *arg, int *more) {
  char tenant[EG_STORE_ID_MAX + 1], sid[EG_STORE_ID_MAX + 1];
  MDB_cursor *c;
  MDB_val k, v;
  eg_err e = EG_OK;
  size_t n = 0;
  if (!eg_txn_readable(t) || !fn || !more || after_len > EG_KEY_MAX || (after_len && !after))
    return EG_EINVAL;
  *more = 0;
  int rc = mdb_cursor_open(t->txn, t->s->messages, &c);
  if (rc) return eg_store__err(rc);
  if (after_len) {
    k = (MDB_val){after_len, (void *)after};
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    /* Strictly after: the cursor's own message was visited. */
    if (rc == MDB_SUCCESS && k.mv_size == after_len && memcmp(k.mv_data, after, after_len) == 0)
      rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  } else {
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
  }
  while (rc == MDB_SUCCESS) {
    ProtobufCMessage *m;
    if (n == max) {
      *more = 1;
      break;
    }
    if ((e = eg_message_key_parse(&k, tenant, sid)) || (e = eg_store__decode(EG_MESSAGE_DESC, &v, &m)))
      break;
    n++;
    int stop = fn(arg, k.mv_data, k.mv_size, tenant, sid, (eg_message_rec *)m);
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    if (stop) {
      *more = rc == MDB_SUCCESS;
      break;
    }
  }
  mdb_cursor_close(c);
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  return e ? e : eg_store__err(rc);
}

/* ---- index state -------------------------------------------------------------- */

static eg_err eg_index_state_key(eg_key *k, const char *name) {
  if (!name || (strcmp(name, EG_INDEX_MEMORIES) != 0 && strcmp(name, EG_INDEX_MESSAGES) != 0))
    return EG_EINVAL;
  eg_key_init(k);
  return eg_key_raw(k, name, strlen(name));
}

eg_err eg_store_index_state_get(eg_txn *t, const char *name, eg_index_state_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t) || !out) return EG_EINVAL;
  eg_err e = eg_index_state_key(&k, name);
  return e ? e
           : eg_store__get_msg(t->txn, t->s->index_state, &k, EG_INDEX_STATE_DESC,
                               (ProtobufCMessage **)out);
}

eg_err eg_store_index_state_put(eg_txn *t, const char *name, const eg_index_state_rec *rec) {
  eg_key k;
  if (!eg_txn_writable(t) || !rec) return EG_EINVAL;
  assert(rec->base.descriptor == EG_INDEX_STATE_DESC);
  /* The cursor is a record key. */
  if (rec->cursor.len > EG_KEY_MAX) return EG_EINVAL;
  eg_err e = eg_index_state_key(&k, name);
  return e ? e : eg_store__put_msg(t, t->s->index_state, &k, &rec->base, 0);
}
