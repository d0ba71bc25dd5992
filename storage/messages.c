/* Message records, idempotency keys, the per-session range scan and the
 * erasure of a session's messages. */
#include <assert.h>

#include "storage/internal.h"

#define EG_MESSAGE_DESC (&engram__storage__v1__message_record__descriptor)

eg_err eg_store_message_put(eg_txn *t, const char *tenant, const char *session_id,
                            const eg_message_rec *rec) {
  eg_key k, ik;
  int idem = rec && rec->client_message_id && rec->client_message_id[0];
  if (!eg_txn_writable(t) || !rec || rec->seq < 0) return EG_EINVAL;
  assert(rec->base.descriptor == EG_MESSAGE_DESC);
  eg_err e = eg_key_message(&k, tenant, session_id, (uint64_t)rec->seq);
  if (!e && idem) e = eg_key_idem(&ik, tenant, session_id, rec->client_message_id);
  if (!e) e = eg_store__message_terms_check(rec);
  /* Before the put: it compares rec with the session's oldest message. */
  if (!e) e = eg_store__message_index(t, tenant, session_id, rec);
  if (!e) e = eg_store__put_msg(t, t->s->messages, &k, &rec->base, 0);
  if (!e) e = eg_store__message_terms_put(t, tenant, session_id, rec);
  if (e || !idem) return e;
  uint8_t seq[8];
  eg_be64_put(seq, (uint64_t)rec->seq);
  return eg_store__put(t, t->s->idempotency, &ik, seq, sizeof seq);
}

eg_err eg_store_message_put_len(const eg_store *s, const char *tenant, const char *session_id,
                                const eg_message_rec *rec, size_t *len) {
  eg_key k, ik;
  size_t postings;
  int idem = rec->client_message_id && rec->client_message_id[0];
  eg_err e = eg_key_message(&k, tenant, session_id, (uint64_t)rec->seq);
  if (!e && idem) e = eg_key_idem(&ik, tenant, session_id, rec->client_message_id);
  if (!e) e = eg_store__message_terms_len(s, tenant, session_id, rec, &postings);
  if (e) return e;
  *len = eg_wal__put_len(s, s->messages, k.len, protobuf_c_message_get_packed_size(&rec->base));
  if (idem) *len += eg_wal__put_len(s, s->idempotency, ik.len, 8); /* the seq */
  *len += postings;
  return EG_OK;
}

eg_err eg_store_message_get(eg_txn *t, const char *tenant, const char *session_id,
                            uint64_t seq, eg_message_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_message(&k, tenant, session_id, seq);
  if (e) return e;
  return eg_store__get_msg(t->txn, t->s->messages, &k, EG_MESSAGE_DESC,
                           (ProtobufCMessage **)out);
}

eg_err eg_store_idem_get(eg_txn *t, const char *tenant, const char *session_id,
                         const char *client_message_id, uint64_t *seq) {
  eg_key k;
  MDB_val key, val;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_idem(&k, tenant, session_id, client_message_id);
  if (e) return e;
  key = (MDB_val){k.len, k.buf};
  e = eg_store__err(mdb_get(t->txn, t->s->idempotency, &key, &val));
  if (e) return e;
  if (val.mv_size != 8) return EG_ECORRUPT;
  *seq = eg_be64_get(val.mv_data);
  return EG_OK;
}

/* Decodes the message under a cursor and hands it to fn; *stop is set when
 * fn asks to stop. */
static eg_err eg_message_visit(const MDB_val *k, const MDB_val *v, size_t prefix_len,
                               ProtobufCAllocator *alloc, eg_message_visit_fn fn, void *arg,
                               int *stop) {
  ProtobufCMessage *m;
  /* Every key in a session's range is prefix | seq. */
  if (k->mv_size != prefix_len + 8) return EG_ECORRUPT;
  eg_err e = EG_OK;
  if (alloc) {
    /* As eg_store__decode, through the caller's allocator. */
    m = protobuf_c_message_unpack(EG_MESSAGE_DESC, alloc, v->mv_size, v->mv_data);
    if (!m) e = EG_ECORRUPT;
  } else {
    e = eg_store__decode(EG_MESSAGE_DESC, v, &m);
  }
  if (e) return e;
  *stop = fn(arg, (eg_message_rec *)m);
  return EG_OK;
}

eg_err eg_store_messages_scan(eg_txn *t, const char *tenant, const char *session_id,
                              uint64_t start_seq, int descending, eg_message_visit_fn fn,
                              void *arg) {
  return eg_store_messages_scan_in(t, tenant, session_id, start_seq, descending, NULL, fn, arg);
}

eg_err eg_store_messages_scan_in(eg_txn *t, const char *tenant, const char *session_id,
                                 uint64_t start_seq, int descending, ProtobufCAllocator *alloc,
                                 eg_message_visit_fn fn, void *arg) {
  eg_key prefix, seek;
  MDB_cursor *c = NULL;
  MDB_val k, v;
  int stop = 0;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  eg_err e = eg_key_session_range(&prefix, tenant, session_id);
  if (!e) e = eg_key_message(&seek, tenant, session_id, start_seq);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, t->s->messages, &c);
  if (rc) goto fail;
  MDB_cursor_op step = descending ? MDB_PREV : MDB_NEXT;
  if (descending) {
    /* Lands on start_seq or the message below it; when nothing in the
     * session is >= start_seq, SET_RANGE lands on the next session (or the
     * end) and the step back brings us into range. */
    rc = eg_store__seek_below(c, &seek, 1, &k, &v);
  } else {
    k = (MDB_val){seek.len, seek.buf};
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  }
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &prefix)) {
    e = eg_message_visit(&k, &v, prefix.len, alloc, fn, arg, &stop);
    if (e || stop) break;
    rc = mdb_cursor_get(c, &k, &v, step);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
fail:
  if (c) mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_store__erase_messages(eg_txn *t, const char *tenant, const char *session_id,
                                uint64_t budget, uint64_t *spent, uint64_t *n, int *left) {
  eg_message_debt d = {.messages = 0};
  eg_message_rec *first;
  eg_key k;
  eg_err e;
  *left = 0;
  /* Lowest seq first, the postings with their message, so a step cut
   * short leaves every remaining message with its postings. */
  while (!(e = eg_store__first_message(t, tenant, session_id, &first)) && first) {
    uint64_t cost = 1 + (first->index_version ? first->n_index_terms : 0);
    /* Over budget only with the step's first key: a step always moves on. */
    if (*spent >= budget || (*spent && cost > budget - *spent)) {
      protobuf_c_message_free_unpacked(&first->base, NULL);
      *left = 1;
      break;
    }
    e = eg_store__message_terms_del(t, tenant, session_id, first, &d, NULL);
    if (!e) e = eg_key_message(&k, tenant, session_id, (uint64_t)first->seq);
    if (!e) e = eg_store__del(t, t->s->messages, &k);
    protobuf_c_message_free_unpacked(&first->base, NULL);
    if (e) break;
    *spent += cost;
    if (n) ++*n;
  }
  eg_err se = eg_store__message_debt_settle(t, tenant, &d);
  return e ? e : se;
}
