/* Session records, their per-user index and the newest-first scan. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "storage/internal.h"

#define EG_SESSION_DESC (&engram__storage__v1__session_record__descriptor)

eg_err eg_store_session_get(eg_txn *t, const char *tenant, const char *session_id,
                            eg_session_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_session(&k, tenant, session_id);
  if (e) return e;
  return eg_store__get_msg(t->txn, t->s->sessions, &k, EG_SESSION_DESC,
                           (ProtobufCMessage **)out);
}

/* The sessions_by_user key of rec. */
static eg_err eg_session_index_key(eg_key *k, const char *tenant, const eg_session_rec *rec) {
  /* Negative times would sort after every positive one as u64. */
  if (rec->create_time_us < 0) return EG_EINVAL;
  return eg_key_user_session(k, tenant, rec->user_id, (uint64_t)rec->create_time_us,
                             rec->session_id);
}

eg_err eg_store_session_put(eg_txn *t, const char *tenant, const eg_session_rec *rec,
                            const eg_session_rec *prev) {
  eg_key k, ik;
  if (!eg_txn_writable(t) || !rec) return EG_EINVAL;
  assert(rec->base.descriptor == EG_SESSION_DESC);
  assert(!prev || strcmp(prev->session_id, rec->session_id) == 0);
  eg_err e = eg_key_session(&k, tenant, rec->session_id);
  if (!e && !prev) e = eg_session_index_key(&ik, tenant, rec);
  if (!e) e = eg_store__session_check(rec);
  if (e) return e;
  /* A shallow copy: only last_activity_us differs from rec. */
  eg_session_rec stored = *rec;
  stored.last_activity_us = eg_store__session_activity(rec);
  e = eg_store__put_msg(t, t->s->sessions, &k, &stored.base, prev ? 0 : MDB_NOOVERWRITE);
  /* The lifecycle entries move from prev's keys to rec's: the caller read
   * prev in this txn, so it names the entries there now. */
  if (!e) e = eg_store__session_index(t, tenant, prev, &stored);
  if (e || prev) return e;
  /* The index entry carries everything in its key. */
  return eg_store__put(t, t->s->sessions_by_user, &ik, "", 0);
}

/* Drops session sid's record, its sessions_by_user entry and every
 * lifecycle entry (its messages' included); the messages stay.
 * EG_ENOTFOUND if there is no record. */
/* Deletes the record of sid and its index entries; user (may be NULL,
 * EG_STORE_ID_MAX + 1 bytes) gets its owner. */
static eg_err eg_session_drop(eg_txn *t, const char *tenant, const char *sid, char *user) {
  eg_key k, ik;
  eg_session_rec *stored = NULL;
  eg_err e = eg_key_session(&k, tenant, sid);
  /* The stored record, not a caller's copy, names the index entries. */
  if (!e) e = eg_store__get_msg(t->txn, t->s->sessions, &k, EG_SESSION_DESC,
                                (ProtobufCMessage **)&stored);
  if (!e) e = eg_session_index_key(&ik, tenant, stored);
  if (!e) e = eg_store__session_unindex(t, tenant, stored);
  if (!e && user) snprintf(user, EG_STORE_ID_MAX + 1, "%s", stored->user_id);
  if (stored) protobuf_c_message_free_unpacked(&stored->base, NULL);
  if (!e) e = eg_store__del(t, t->s->sessions, &k);
  if (e) return e;
  e = eg_store__del(t, t->s->sessions_by_user, &ik);
  /* A missing index entry is no reason to keep the rest. */
  return e == EG_ENOTFOUND ? EG_OK : e;
}

eg_err eg_store_session_delete(eg_txn *t, const char *tenant, const eg_session_rec *rec,
                               uint64_t *deleted_messages) {
  eg_key range;
  uint64_t n = 0;
  if (!eg_txn_writable(t) || !rec) return EG_EINVAL;
  /* Every message is decoded and its postings deleted one key each, in
   * this txn: only a small session may. */
  if (rec->message_count > EG_SESSION_DELETE_INLINE_MAX) return EG_EINVAL;
  eg_err e = eg_key_session_range(&range, tenant, rec->session_id);
  if (!e) e = eg_session_drop(t, tenant, rec->session_id, NULL);
  /* The postings first, from the records the range delete then drops in
   * one op. */
  if (!e) e = eg_store__session_postings_del(t, tenant, rec->session_id);
  if (!e) e = eg_store__del_prefix(t, t->s->messages, &range, &n);
  if (!e) e = eg_store__del_prefix(t, t->s->idempotency, &range, NULL);
  if (!e && deleted_messages) *deleted_messages = n;
  return e;
}

eg_err eg_store_session_retire(eg_txn *t, const char *tenant, const char *session_id,
                               int64_t now_us) {
  if (!eg_txn_writable(t) || !session_id) return EG_EINVAL;
  if (now_us < 0) return EG_EINVAL;
  char user[EG_STORE_ID_MAX + 1];
  eg_err e = eg_session_drop(t, tenant, session_id, user);
  return e ? e : eg_store__purge_mark(t, tenant, session_id, user, now_us);
}

/* ---- scan --------------------------------------------------------------- */

/* Loads the session an index entry points at and hands it to fn.
 * suffix is the entry's key after the user prefix: create_us | session_id.
 * *stop is set when fn asks to stop. */
static eg_err eg_session_visit(eg_txn *t, const char *tenant, const uint8_t *suffix, size_t n,
                               eg_session_visit_fn fn, void *arg, int *stop) {
  eg_session_cursor cur;
  eg_session_rec *rec = NULL;
  eg_key k;
  if (n < 9 || n > EG_SESSION_CURSOR_MAX) return EG_ECORRUPT;
  eg_key_init(&k);
  eg_err e = eg_key_id(&k, tenant);
  if (!e) e = eg_key_raw(&k, suffix + 8, n - 8);
  if (e) return e;
  e = eg_store__get_msg(t->txn, t->s->sessions, &k, EG_SESSION_DESC, (ProtobufCMessage **)&rec);
  /* An index entry without its record: the two DBs disagree. */
  if (e == EG_ENOTFOUND) return EG_ECORRUPT;
  if (e) return e;
  memcpy(cur.buf, suffix, n);
  cur.len = n;
  *stop = fn(arg, rec, &cur);
  return EG_OK;
}

/* Where a newest-first walk starts: strictly below seek. Without a cursor
 * seek is the user prefix followed by more 0xff bytes than any suffix
 * holds, which sorts after every entry of the user. */
static eg_err eg_sessions_seek_key(eg_key *seek, const eg_key *prefix,
                                   const eg_session_cursor *after) {
  uint8_t ff[EG_SESSION_CURSOR_MAX + 1];
  *seek = *prefix;
  if (after) return eg_key_raw(seek, after->buf, after->len);
  memset(ff, 0xff, sizeof ff);
  return eg_key_raw(seek, ff, sizeof ff);
}

/* Walks an index whose keys are prefix | u64 BE | session_id newest first
 * (the sessions_by_user and sessions_by_activity layouts). */
int64_t eg_session_cursor_time_us(const eg_session_cursor *cur) {
  return (int64_t)eg_be64_get(cur->buf);
}

static eg_err eg_sessions_walk(eg_txn *t, const char *tenant, MDB_dbi dbi, const eg_key *prefix,
                               const eg_session_cursor *after, eg_session_visit_fn fn,
                               void *arg) {
  eg_key seek;
  MDB_cursor *c = NULL;
  MDB_val k, v;
  int stop = 0;
  if (after && (after->len < 9 || after->len > EG_SESSION_CURSOR_MAX)) return EG_EINVAL;
  eg_err e = eg_sessions_seek_key(&seek, prefix, after);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, dbi, &c);
  if (rc) goto fail;
  rc = eg_store__seek_below(c, &seek, 0, &k, &v);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, prefix)) {
    e = eg_session_visit(t, tenant, (const uint8_t *)k.mv_data + prefix->len,
                         k.mv_size - prefix->len, fn, arg, &stop);
    if (e || stop) break;
    rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
fail:
  if (c) mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_store_sessions_scan(eg_txn *t, const char *tenant, const char *user_id,
                              const eg_session_cursor *after, eg_session_visit_fn fn,
                              void *arg) {
  eg_key prefix;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_err e = eg_key_user(&prefix, tenant, user_id);
  return e ? e : eg_sessions_walk(t, tenant, t->s->sessions_by_user, &prefix, after, fn, arg);
}

eg_err eg_store_sessions_by_activity_scan(eg_txn *t, const char *tenant,
                                          const eg_session_cursor *after,
                                          eg_session_visit_fn fn, void *arg) {
  eg_key prefix;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_err e = eg_key_tenant(&prefix, tenant);
  return e ? e
           : eg_sessions_walk(t, tenant, t->s->sessions_by_activity, &prefix, after, fn, arg);
}
