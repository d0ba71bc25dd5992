/* Lifecycle indexes (sessions_by_activity, session_terms, sweep_due), their
 * scans, the warm tier's message deletion and the retention policy. The
 * writers in sessions.c, messages.c and memories.c call the *_index
 * helpers here with the stored record before and after each write. */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "storage/internal.h"

#define EG_SESSION_DESC (&engram__storage__v1__session_record__descriptor)
#define EG_MESSAGE_DESC (&engram__storage__v1__message_record__descriptor)
#define EG_MEMORY_DESC (&engram__storage__v1__memory_record__descriptor)
#define EG_RETENTION_DESC (&engram__storage__v1__retention_policy_record__descriptor)

/* ==== index entries =========================================================== */

static int eg_key_eq(const eg_key *a, const eg_key *b) {
  return a->len == b->len && memcmp(a->buf, b->buf, a->len) == 0;
}

/* Moves an index entry (value "") from old to new; either may be NULL
 * (none). Nothing is written when the two are the same key. */
static eg_err eg_entry_move(eg_txn *t, MDB_dbi dbi, const eg_key *old, const eg_key *neu) {
  if (old && neu && eg_key_eq(old, neu)) return EG_OK;
  eg_err e = old ? eg_store__del_quiet(t, dbi, old) : EG_OK;
  return e || !neu ? e : eg_store__put(t, dbi, neu, "", 0);
}

/* The sweep_due key of (kind, id) due at *due, or NULL when due is NULL. */
static eg_err eg_sweep_key(eg_key *k, unsigned kind, const char *tenant, const int64_t *due,
                           const char *id, const eg_key **out) {
  *out = NULL;
  if (!due) return EG_OK;
  if (*due < 0) return EG_EINVAL;
  eg_err e = eg_key_sweep(k, kind, tenant, (uint64_t)*due, id);
  if (!e) *out = k;
  return e;
}

static eg_err eg_sweep_move(eg_txn *t, unsigned kind, const char *tenant, const char *id,
                            const int64_t *old_due, const int64_t *new_due) {
  eg_key ok, nk;
  const eg_key *o, *n;
  eg_err e = eg_sweep_key(&ok, kind, tenant, old_due, id, &o);
  if (!e) e = eg_sweep_key(&nk, kind, tenant, new_due, id, &n);
  return e ? e : eg_entry_move(t, t->s->sweep_due, o, n);
}

/* ---- sessions ---------------------------------------------------------------- */

int64_t eg_store__session_activity(const eg_session_rec *rec) {
  return rec->update_time_us > rec->last_activity_us ? rec->update_time_us
                                                      : rec->last_activity_us;
}

int64_t eg_store_session_gone_us(const eg_session_rec *rec) {
  if (rec->state == EG_SSTATE_ENDED)
    return rec->end_time_us ? rec->end_time_us : rec->update_time_us;
  return rec->expire_time_us;
}

/* rec's EG_SWEEP_SESSION_GONE due time; 0 if it has none (an ACTIVE
 * session without expiry). */
static int eg_session_gone_due(const eg_session_rec *rec, int64_t *due) {
  *due = eg_store_session_gone_us(rec);
  return rec->state == EG_SSTATE_ENDED || *due != 0;
}

eg_err eg_store__session_check(const eg_session_rec *rec) {
  int64_t due;
  if (rec->n_metadata_hashes > EG_SESSION_TERMS_MAX ||
      !eg_store__u64_ascending(rec->metadata_hashes, rec->n_metadata_hashes) ||
      eg_store__session_activity(rec) < 0 || (eg_session_gone_due(rec, &due) && due < 0))
    return EG_EINVAL;
  return EG_OK;
}

static eg_err eg_term_entry(eg_txn *t, const char *tenant, uint64_t term, const char *sid,
                            int put) {
  eg_key k;
  eg_err e = eg_key_session_term(&k, tenant, term, sid);
  if (e) return e;
  return put ? eg_store__put(t, t->s->session_terms, &k, "", 0)
             : eg_store__del_quiet(t, t->s->session_terms, &k);
}

/* Deletes old's terms neu lacks and adds neu's old lacks (both sorted). */
static eg_err eg_terms_move(eg_txn *t, const char *tenant, const eg_session_rec *old,
                            const eg_session_rec *neu) {
  size_t i = 0, j = 0, n = neu ? neu->n_metadata_hashes : 0, m = old ? old->n_metadata_hashes : 0;
  eg_err e = EG_OK;
  while (!e && (i < n || j < m)) {
    if (j == m || (i < n && neu->metadata_hashes[i] < old->metadata_hashes[j]))
      e = eg_term_entry(t, tenant, neu->metadata_hashes[i++], neu->session_id, 1);
    else if (i == n || old->metadata_hashes[j] < neu->metadata_hashes[i])
      e = eg_term_entry(t, tenant, old->metadata_hashes[j++], old->session_id, 0);
    else
      i++, j++;
  }
  return e;
}

static eg_err eg_activity_key(eg_key *k, const char *tenant, const eg_session_rec *rec,
                              const eg_key **out) {
  *out = NULL;
  if (!rec) return EG_OK;
  eg_err e = eg_key_activity(k, tenant, (uint64_t)eg_store__session_activity(rec), rec->session_id);
  if (!e) *out = k;
  return e;
}

eg_err eg_store__session_index(eg_txn *t, const char *tenant, const eg_session_rec *old,
                               const eg_session_rec *neu) {
  eg_key ok, nk;
  const eg_key *o, *n;
  int64_t od, nd;
  const eg_session_rec *any = neu ? neu : old;
  if (!any) return EG_OK;
  eg_err e = eg_activity_key(&ok, tenant, old, &o);
  if (!e) e = eg_activity_key(&nk, tenant, neu, &n);
  if (!e) e = eg_entry_move(t, t->s->sessions_by_activity, o, n);
  if (!e) e = eg_terms_move(t, tenant, old, neu);
  if (e) return e;
  int has_o = old && eg_session_gone_due(old, &od), has_n = neu && eg_session_gone_due(neu, &nd);
  return eg_sweep_move(t, EG_SWEEP_SESSION_GONE, tenant, any->session_id, has_o ? &od : NULL,
                       has_n ? &nd : NULL);
}

/* ---- messages ---------------------------------------------------------------- */

eg_err eg_store__first_message(eg_txn *t, const char *tenant, const char *sid,
                               eg_message_rec **out) {
  eg_key prefix;
  MDB_cursor *c = NULL;
  *out = NULL;
  eg_err e = eg_key_session_range(&prefix, tenant, sid);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, t->s->messages, &c);
  if (rc) return eg_store__err(rc);
  MDB_val k, v;
  rc = eg_store__seek_at(c, &prefix, &k, &v);
  if (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &prefix))
    e = eg_store__decode(EG_MESSAGE_DESC, &v, (ProtobufCMessage **)out);
  else if (rc != MDB_NOTFOUND && rc != MDB_SUCCESS)
    e = eg_store__err(rc);
  mdb_cursor_close(c);
  return e;
}

eg_err eg_store__message_index(eg_txn *t, const char *tenant, const char *sid,
                               const eg_message_rec *rec) {
  eg_message_rec *first;
  if (rec->create_time_us < 0) return EG_EINVAL;
  eg_err e = eg_store__first_message(t, tenant, sid, &first);
  if (e) return e;
  /* The common case, an append behind older messages: nothing moves. */
  if (first && first->seq < rec->seq) {
    protobuf_c_message_free_unpacked(&first->base, NULL);
    return EG_OK;
  }
  int64_t old_due = first ? first->create_time_us : 0;
  if (first) protobuf_c_message_free_unpacked(&first->base, NULL);
  return eg_sweep_move(t, EG_SWEEP_SESSION_MESSAGES, tenant, sid, first ? &old_due : NULL,
                       &rec->create_time_us);
}

/* Drops the session's EG_SWEEP_SESSION_MESSAGES entry (before its messages go). */
static eg_err eg_messages_unindex(eg_txn *t, const char *tenant, const char *sid) {
  eg_message_rec *first;
  eg_err e = eg_store__first_message(t, tenant, sid, &first);
  if (e || !first) return e;
  int64_t due = first->create_time_us;
  protobuf_c_message_free_unpacked(&first->base, NULL);
  return eg_sweep_move(t, EG_SWEEP_SESSION_MESSAGES, tenant, sid, &due, NULL);
}

eg_err eg_store__session_unindex(eg_txn *t, const char *tenant, const eg_session_rec *rec) {
  eg_err e = eg_store__session_index(t, tenant, rec, NULL);
  return e ? e : eg_messages_unindex(t, tenant, rec->session_id);
}

/* The keys deleting message rec removes: the message, its postings and
 * its idempotency key. */
static uint64_t eg_message_keys(const eg_message_rec *rec) {
  return 1 + (rec->index_version ? rec->n_index_terms : 0) +
         (rec->client_message_id && rec->client_message_id[0] ? 1 : 0);
}

/* Deletes the session's oldest messages created before before_us, with
 * their idempotency keys and postings, at most max of them, while *keys
 * (in: what the caller's step deleted so far; out: plus these) plus theirs
 * (eg_message_keys) stays within max_keys; with *keys 0 the first goes
 * whatever its keys. Their stats go into d. *n: the messages deleted;
 * *more: a limit stopped it with one left. *old_due: the create time of
 * the oldest message before (*had_first: there was one); *first: the
 * oldest one left (NULL: none), the caller's to free. */
static eg_err eg_messages_drop_some(eg_txn *t, const char *tenant, const char *session_id,
                                    int64_t before_us, size_t max, uint64_t max_keys,
                                    uint64_t *n, uint64_t *keys, int *more, int *had_first,
                                    int64_t *old_due, eg_message_rec **first,
                                    eg_message_debt *d) {
  eg_key mk, ik;
  *n = 0;
  *more = 0;
  eg_err e = eg_store__first_message(t, tenant, session_id, first);
  *had_first = !e && *first;
  if (!*had_first) return e;
  *old_due = (*first)->create_time_us;
  /* Oldest first: each round takes the session's current first message. */
  while (*first && (*first)->create_time_us < before_us) {
    uint64_t cost = eg_message_keys(*first);
    /* Over max_keys only as the step's first message: a step always
     * moves on, whatever one message carries. */
    if (*n == max || (*keys && (*keys >= max_keys || cost > max_keys - *keys))) {
      *more = 1;
      break;
    }
    e = eg_store__message_terms_del(t, tenant, session_id, *first, d, NULL);
    if (!e) e = eg_key_message(&mk, tenant, session_id, (uint64_t)(*first)->seq);
    if (!e) e = eg_store__del(t, t->s->messages, &mk);
    if (!e && (*first)->client_message_id && (*first)->client_message_id[0]) {
      e = eg_key_idem(&ik, tenant, session_id, (*first)->client_message_id);
      if (!e) e = eg_store__del_quiet(t, t->s->idempotency, &ik);
    }
    if (e) return e;
    ++*n;
    *keys += cost;
    protobuf_c_message_free_unpacked(&(*first)->base, NULL);
    if ((e = eg_store__first_message(t, tenant, session_id, first))) return e;
  }
  return EG_OK;
}

/* eg_messages_drop_some, with the stats of what went subtracted. */
static eg_err eg_messages_drop(eg_txn *t, const char *tenant, const char *session_id,
                               int64_t before_us, size_t max, uint64_t max_keys, uint64_t *n,
                               uint64_t *keys, int *more, int *had_first, int64_t *old_due,
                               eg_message_rec **first) {
  eg_message_debt d = {.messages = 0};
  eg_err e = eg_messages_drop_some(t, tenant, session_id, before_us, max, max_keys, n, keys,
                                   more, had_first, old_due, first, &d);
  eg_err se = eg_store__message_debt_settle(t, tenant, &d);
  return e ? e : se;
}

eg_err eg_store_messages_delete_before(eg_txn *t, const char *tenant, const char *session_id,
                                       int64_t before_us, size_t max, uint64_t max_keys,
                                       uint64_t *keys, uint64_t *n, int *more) {
  eg_message_rec *first = NULL;
  uint64_t count = 0, spent;
  int left = 0, had_first = 0;
  int64_t old_due = 0;
  if (!eg_txn_writable(t) || !keys) return EG_EINVAL;
  spent = *keys;
  eg_err e = eg_messages_drop(t, tenant, session_id, before_us, max, max_keys, &count, &spent,
                              &left, &had_first, &old_due, &first);
  if (!e && count) {
    int64_t new_due = first ? first->create_time_us : 0;
    e = eg_sweep_move(t, EG_SWEEP_SESSION_MESSAGES, tenant, session_id, &old_due,
                      first ? &new_due : NULL);
  }
  if (first) protobuf_c_message_free_unpacked(&first->base, NULL);
  if (!e) *keys = spent;
  if (!e && n) *n = count;
  if (!e && more) *more = left;
  return e;
}

/* ---- retired sessions --------------------------------------------------------- */

/* Idempotency keys live and die with their messages, so none should be
 * left once the messages are gone; a stray one would make a new session
 * of the same id answer a retry with an old seq, so they go too. */
static eg_err eg_idem_clear(eg_txn *t, const char *tenant, const char *sid) {
  eg_key range;
  eg_err e = eg_key_session_range(&range, tenant, sid);
  return e ? e : eg_store__del_prefix(t, t->s->idempotency, &range, NULL);
}

eg_err eg_store__purge_mark(eg_txn *t, const char *tenant, const char *sid, const char *user_id,
                            int64_t now_us) {
  eg_message_rec *first;
  eg_key k;
  const eg_key *pk;
  eg_err e = eg_store__first_message(t, tenant, sid, &first);
  if (e) return e;
  if (!first) return eg_idem_clear(t, tenant, sid);
  protobuf_c_message_free_unpacked(&first->base, NULL);
  /* The entry's value names the owner: the session record and its
   * sessions_by_user entry are gone, and DeleteUser must still find the
   * messages (eg_store__erase_purging). */
  if ((e = eg_sweep_key(&k, EG_SWEEP_SESSION_PURGE, tenant, &now_us, sid, &pk))) return e;
  return eg_store__put(t, t->s->sweep_due, pk, user_id, strlen(user_id));
}

eg_err eg_store__erase_purging(eg_txn *t, const char *tenant, const char *user_id,
                               uint64_t budget, uint64_t *spent, uint64_t *messages, int *left) {
  eg_key prefix, range;
  MDB_cursor *c = NULL;
  MDB_val key, val;
  size_t ulen = strlen(user_id);
  char sid[EG_STORE_ID_MAX + 1];
  *left = 0;
  eg_err e = eg_key_sweep_tenant(&prefix, EG_SWEEP_SESSION_PURGE, tenant);
  if (e) return e;
  /* One retired session of the user at a time: its messages go, then its
   * entry; the cursor starts over after each (deletes move it). */
  for (;;) {
    int rc = mdb_cursor_open(t->txn, t->s->sweep_due, &c);
    if (!rc) rc = eg_store__seek_at(c, &prefix, &key, &val);
    while (!rc && key.mv_size > prefix.len + 8 && memcmp(key.mv_data, prefix.buf, prefix.len) == 0 &&
           !(val.mv_size == ulen && memcmp(val.mv_data, user_id, ulen) == 0))
      rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
    int found = !rc && key.mv_size > prefix.len + 8 &&
                memcmp(key.mv_data, prefix.buf, prefix.len) == 0;
    eg_key entry;
    size_t n = found ? key.mv_size - prefix.len - 8 : 0;
    if (found && (n == 0 || n > EG_STORE_ID_MAX)) rc = MDB_CORRUPTED;
    if (found && !rc) {
      memcpy(sid, (const uint8_t *)key.mv_data + prefix.len + 8, n);
      sid[n] = '\0';
      eg_key_init(&entry);
      e = eg_key_raw(&entry, key.mv_data, key.mv_size);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND) return eg_store__err(rc);
    if (e) return e;
    if (!found) return EG_OK;
    if ((e = eg_key_session_range(&range, tenant, sid))) return e;
    if ((e = eg_store__erase_messages(t, tenant, sid, budget, spent, messages, left)) || *left)
      return e;
    if ((e = eg_store__erase_range(t, t->s->idempotency, &range, budget, spent, NULL, left)) ||
        *left)
      return e;
    if ((e = eg_store__del(t, t->s->sweep_due, &entry))) return e;
    ++*spent;
  }
}

eg_err eg_store_session_purge_step(eg_txn *t, const char *tenant, const char *session_id,
                                   int64_t due_us, size_t max, uint64_t max_keys,
                                   uint64_t *keys, uint64_t *n, int *more) {
  eg_message_rec *first = NULL;
  uint64_t count = 0, spent;
  int left = 0, had_first = 0;
  int64_t old_due = 0;
  eg_session_rec *rec = NULL;
  if (!eg_txn_writable(t) || !keys) return EG_EINVAL;
  /* A live record of this id (CreateSession refuses the id while it is
   * being purged, so only damage makes one) owns the messages: the entry
   * goes, they stay. */
  eg_err e = eg_store_session_get(t, tenant, session_id, &rec);
  if (e == EG_OK) protobuf_c_message_free_unpacked(&rec->base, NULL);
  if (e == EG_OK) {
    if (n) *n = 0;
    if (more) *more = 0;
    return eg_sweep_move(t, EG_SWEEP_SESSION_PURGE, tenant, session_id, &due_us, NULL);
  }
  if (e != EG_ENOTFOUND) return e;
  spent = *keys;
  e = eg_messages_drop(t, tenant, session_id, INT64_MAX, max, max_keys, &count, &spent, &left,
                       &had_first, &old_due, &first);
  if (first) protobuf_c_message_free_unpacked(&first->base, NULL);
  /* The last message and the entry go in one txn: while the entry is
   * there, messages are, and eg_store_session_purging says so. */
  if (!e && !left) e = eg_idem_clear(t, tenant, session_id);
  if (!e && !left) e = eg_sweep_move(t, EG_SWEEP_SESSION_PURGE, tenant, session_id, &due_us, NULL);
  if (!e) *keys = spent;
  if (!e && n) *n = count;
  if (!e && more) *more = left;
  return e;
}

eg_err eg_store_session_purging(eg_txn *t, const char *tenant, const char *session_id,
                                int *purging) {
  eg_message_rec *first;
  eg_session_rec *rec;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_store_session_get(t, tenant, session_id, &rec);
  if (e == EG_OK) protobuf_c_message_free_unpacked(&rec->base, NULL);
  if (e != EG_ENOTFOUND) {
    *purging = 0;
    return e;
  }
  if ((e = eg_store__first_message(t, tenant, session_id, &first))) return e;
  *purging = first != NULL;
  if (first) protobuf_c_message_free_unpacked(&first->base, NULL);
  return EG_OK;
}

/* ---- memories ---------------------------------------------------------------- */

static int eg_memory_tomb_due(const eg_memory_rec *rec, int64_t *due) {
  /* Every state that left search for good: deleted, a duplicate, or
   * superseded by a newer contradicting memory. */
  if (rec->state != EG_MSTATE_DELETED && rec->state != EG_MSTATE_DUPLICATE &&
      rec->state != EG_MSTATE_SUPERSEDED)
    return 0;
  /* Records from before state_time_us existed: their last update. */
  *due = rec->state_time_us ? rec->state_time_us : rec->update_time_us;
  return 1;
}

static int eg_memory_expire_due(const eg_memory_rec *rec, int64_t *due) {
  *due = rec->expire_time_us;
  return rec->expire_time_us != 0;
}

eg_err eg_store__memory_index(eg_txn *t, const char *tenant, const eg_memory_rec *old,
                              const eg_memory_rec *neu) {
  static int (*const due_fn[])(const eg_memory_rec *, int64_t *) = {eg_memory_tomb_due,
                                                                    eg_memory_expire_due};
  static const unsigned kinds[] = {EG_SWEEP_MEMORY_TOMBSTONE, EG_SWEEP_MEMORY_EXPIRE};
  const eg_memory_rec *any = neu ? neu : old;
  eg_err e = EG_OK;
  for (size_t i = 0; !e && any && i < 2; i++) {
    int64_t od, nd;
    int has_o = old && due_fn[i](old, &od), has_n = neu && due_fn[i](neu, &nd);
    e = eg_sweep_move(t, kinds[i], tenant, any->memory_id, has_o ? &od : NULL,
                      has_n ? &nd : NULL);
  }
  return e;
}

/* ==== migration 4's back-fill ================================================= */

/* The tenant of a sessions or memories key (u8len tenant | id) into buf. */
static eg_err eg_key_tenant_of(const MDB_val *k, char *buf) {
  const uint8_t *p = k->mv_data;
  if (k->mv_size < 2 || p[0] == 0 || p[0] > EG_STORE_ID_MAX || k->mv_size < 2u + p[0])
    return EG_ECORRUPT;
  memcpy(buf, p + 1, p[0]);
  buf[p[0]] = '\0';
  return EG_OK;
}

/* Calls fn for every record of dbi (decoded as desc) with its tenant. */
static eg_err eg_backfill_each(eg_txn *t, MDB_dbi dbi, const ProtobufCMessageDescriptor *desc,
                               eg_err (*fn)(eg_txn *, const char *, ProtobufCMessage *)) {
  char tenant[EG_STORE_ID_MAX + 1];
  MDB_cursor *c = NULL;
  MDB_val k, v;
  eg_err e = EG_OK;
  int rc = mdb_cursor_open(t->txn, dbi, &c);
  if (rc) return eg_store__err(rc);
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); !rc && !e;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    ProtobufCMessage *m;
    if ((e = eg_key_tenant_of(&k, tenant)) || (e = eg_store__decode(desc, &v, &m))) break;
    e = fn(t, tenant, m);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  mdb_cursor_close(c);
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  return e ? e : eg_store__err(rc);
}

/* engram.v1.Role values as stored in MessageRecord.role. */
enum { EG_ROLE_USER = 1, EG_ROLE_ASSISTANT = 2, EG_ROLE_SYSTEM = 3 };

/* A v3 session's stats, counted from its messages the way an append counts
 * them (v3 kept none, and deleted no message but with its session). */
struct eg_backfill_count {
  Engram__Storage__V1__SessionStatsRecord stats;
  int64_t n;        /* messages seen */
  int64_t first_us; /* the oldest's create time (the lowest seq: seen first) */
};

static int eg_backfill_count_one(void *arg, eg_message_rec *m) {
  struct eg_backfill_count *c = arg;
  Engram__Storage__V1__SessionStatsRecord *st = &c->stats;
  switch (m->role) {
  case EG_ROLE_USER: st->user_messages++; break;
  case EG_ROLE_ASSISTANT: st->assistant_messages++; break;
  case EG_ROLE_SYSTEM: st->system_messages++; break;
  default: st->tool_messages++; break;
  }
  st->total_tokens += m->token_count;
  if (!st->first_message_time_us) st->first_message_time_us = m->create_time_us;
  st->last_message_time_us = m->create_time_us;
  if (c->n++ == 0) c->first_us = m->create_time_us;
  protobuf_c_message_free_unpacked(&m->base, NULL);
  return 0;
}

/* Rewrites a v3 session as v4 code would have stored it, from its own data
 * only (so every copy of the store writes the same bytes): the stats of
 * its messages, end_time_us of an ENDED one (v3 kept none: its last update
 * is when it ended) and last_activity_us; then adds its index entries. */
static eg_err eg_backfill_session(eg_txn *t, const char *tenant, ProtobufCMessage *m) {
  const eg_session_rec *rec = (const eg_session_rec *)m;
  struct eg_backfill_count c = {.stats = ENGRAM__STORAGE__V1__SESSION_STATS_RECORD__INIT};
  eg_session_rec upd = *rec;
  eg_key k;
  eg_err e = eg_store_messages_scan(t, tenant, rec->session_id, 0, 0, eg_backfill_count_one, &c);
  if (e) return e;
  if (!rec->stats && c.n) upd.stats = &c.stats;
  if (upd.state == EG_SSTATE_ENDED && !upd.end_time_us) upd.end_time_us = upd.update_time_us;
  upd.last_activity_us = eg_store__session_activity(rec);
  if ((e = eg_store__session_check(&upd)) || (e = eg_key_session(&k, tenant, rec->session_id)) ||
      (e = eg_store__put_msg(t, t->s->sessions, &k, &upd.base, 0)) ||
      (e = eg_store__session_index(t, tenant, NULL, &upd)) || !c.n)
    return e;
  return eg_sweep_move(t, EG_SWEEP_SESSION_MESSAGES, tenant, rec->session_id, NULL, &c.first_us);
}

static eg_err eg_backfill_memory(eg_txn *t, const char *tenant, ProtobufCMessage *m) {
  return eg_store__memory_index(t, tenant, NULL, (const eg_memory_rec *)m);
}

eg_err eg_store__backfill_v4(MDB_txn *txn, char *err, size_t errlen) {
  /* The index helpers work on an eg_txn of a store: a shell that holds
   * only the handles they use, in an unlogged txn (every copy of the store,
   * replicas included, runs this migration on its own data). */
  static const struct eg_db_slot dbs[] = {
      {EG_DB_SESSIONS, offsetof(eg_store, sessions)},
      {EG_DB_MESSAGES, offsetof(eg_store, messages)},
      {EG_DB_MEMORIES, offsetof(eg_store, memories)},
      {EG_DB_SESSIONS_BY_ACTIVITY, offsetof(eg_store, sessions_by_activity)},
      {EG_DB_SWEEP_DUE, offsetof(eg_store, sweep_due)},
      {EG_DB_SESSION_TERMS, offsetof(eg_store, session_terms)},
  };
  eg_store shell;
  memset(&shell, 0, sizeof shell);
  eg_err e = eg_store__open_dbs(txn, &shell, dbs, sizeof dbs / sizeof dbs[0], "back-fill: ", err,
                                errlen);
  if (e) return e;
  eg_txn t = {.s = &shell, .kind = EG_TXN_WRITE, .txn = txn, .unlogged = 1};
  e = eg_backfill_each(&t, shell.sessions, EG_SESSION_DESC, eg_backfill_session);
  if (e) {
    snprintf(err, errlen, "back-fill of sessions: %s", eg_err_msg(e));
    return e;
  }
  e = eg_backfill_each(&t, shell.memories, EG_MEMORY_DESC, eg_backfill_memory);
  if (e) snprintf(err, errlen, "back-fill of memories: %s", eg_err_msg(e));
  return e;
}

/* ==== scans ==================================================================== */

eg_err eg_store_session_terms_scan(eg_txn *t, const char *tenant, uint64_t term,
                                   const char *after_id, eg_session_id_visit_fn fn, void *arg) {
  eg_key prefix, seek;
  MDB_cursor *c = NULL;
  char id[EG_STORE_ID_MAX + 1];
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_err e = eg_key_term_range(&prefix, tenant, term);
  seek = prefix;
  if (!e && after_id) e = eg_key_tail(&seek, after_id);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, t->s->session_terms, &c);
  if (rc) return eg_store__err(rc);
  MDB_val k, v;
  rc = eg_store__seek_at(c, &seek, &k, &v);
  /* Strictly after: skip the cursor's own entry. */
  if (rc == MDB_SUCCESS && after_id && k.mv_size == seek.len &&
      memcmp(k.mv_data, seek.buf, seek.len) == 0)
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &prefix)) {
    size_t n = k.mv_size - prefix.len;
    if (n == 0 || n > EG_STORE_ID_MAX) {
      e = EG_ECORRUPT;
      break;
    }
    memcpy(id, (const uint8_t *)k.mv_data + prefix.len, n);
    id[n] = '\0';
    if (fn(arg, id)) break;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_store_sweep_scan(eg_txn *t, unsigned kind, const char *tenant, int64_t cutoff_us,
                           size_t max, eg_sweep_visit_fn fn, void *arg) {
  eg_key prefix;
  MDB_cursor *c = NULL;
  char id[EG_STORE_ID_MAX + 1];
  size_t seen = 0;
  if (!eg_txn_readable(t) || !fn || kind > EG_SWEEP_KIND_MAX) return EG_EINVAL;
  eg_err e = eg_key_sweep_tenant(&prefix, kind, tenant);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, t->s->sweep_due, &c);
  if (rc) return eg_store__err(rc);
  MDB_val k, v;
  rc = eg_store__seek_at(c, &prefix, &k, &v);
  while (rc == MDB_SUCCESS && seen < max && eg_key_has_prefix(k.mv_data, k.mv_size, &prefix)) {
    const uint8_t *p = (const uint8_t *)k.mv_data + prefix.len;
    size_t n = k.mv_size - prefix.len;
    if (n < 9 || n - 8 > EG_STORE_ID_MAX) {
      e = EG_ECORRUPT;
      break;
    }
    uint64_t due = eg_be64_get(p);
    /* Keys sort by due time: the first one not due ends the walk. */
    if (cutoff_us < 0 || due >= (uint64_t)cutoff_us) break;
    memcpy(id, p + 8, n - 8);
    id[n - 8] = '\0';
    seen++;
    if (fn(arg, (int64_t)due, id)) break;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_store_sweep_tenants(eg_txn *t, unsigned kind, const char *after_tenant,
                              eg_tenant_visit_fn fn, void *arg) {
  eg_key prefix, seek;
  MDB_cursor *c = NULL;
  char tenant[EG_STORE_ID_MAX + 1];
  /* After every key of one tenant: more 0xff bytes than due_us | id holds. */
  uint8_t past[8 + EG_STORE_ID_MAX + 1];
  memset(past, 0xff, sizeof past);
  if (!eg_txn_readable(t) || !fn || kind > EG_SWEEP_KIND_MAX) return EG_EINVAL;
  eg_err e = eg_key_sweep_kind(&prefix, kind);
  if (!e && after_tenant) e = eg_key_sweep_tenant(&seek, kind, after_tenant);
  else seek = prefix;
  if (!e && after_tenant) e = eg_key_raw(&seek, past, sizeof past);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, t->s->sweep_due, &c);
  if (rc) return eg_store__err(rc);
  for (;;) {
    MDB_val k, v;
    rc = eg_store__seek_at(c, &seek, &k, &v);
    if (rc || !eg_key_has_prefix(k.mv_data, k.mv_size, &prefix)) break;
    const uint8_t *p = k.mv_data;
    size_t n = p[1];
    if (k.mv_size < 2 + n + 9 || n == 0 || n > EG_STORE_ID_MAX) {
      e = EG_ECORRUPT;
      break;
    }
    memcpy(tenant, p + 2, n);
    tenant[n] = '\0';
    if (fn(arg, tenant)) break;
    /* Jump over the rest of this tenant's entries in one seek. */
    eg_key_init(&seek);
    if ((e = eg_key_raw(&seek, p, 2 + n)) || (e = eg_key_raw(&seek, past, sizeof past))) break;
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

/* ==== retention =============================================================== */

eg_err eg_store_retention_get(eg_txn *t, const char *tenant, eg_retention_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t) || !out) return EG_EINVAL;
  eg_err e = eg_key_tenant(&k, tenant);
  if (e) return e;
  return eg_store__get_msg(t->txn, t->s->retention, &k, EG_RETENTION_DESC,
                           (ProtobufCMessage **)out);
}

eg_err eg_store_retention_put(eg_txn *t, const char *tenant, const eg_retention_rec *rec) {
  eg_key k;
  if (!eg_txn_writable(t) || !rec) return EG_EINVAL;
  assert(rec->base.descriptor == EG_RETENTION_DESC);
  const Engram__Storage__V1__RetentionSeconds *v[] = {rec->expired_session_retention_s,
                                                        rec->raw_message_retention_s,
                                                        rec->memory_tombstone_retention_s};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    if (v[i] && v[i]->seconds < 0) return EG_EINVAL;
  eg_err e = eg_key_tenant(&k, tenant);
  return e ? e : eg_store__put_msg(t, t->s->retention, &k, &rec->base, 0);
}
