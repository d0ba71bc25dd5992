/* The store's blind-index key ids (server/blind_key.h). */
#include "server/blind_key.h"

#include <stdatomic.h>
#include <stdio.h>

#include "server/memory_svc.h"

eg_err eg_blind_keys_get(eg_txn *t, const eg_keyring *kr, eg_blind_keys *out) {
  eg_blind_key_rec *rec;
  eg_err e = eg_store_blind_key_get(t, &rec);
  out->current = kr ? eg_keyring_blind_key_id(kr) : 0;
  out->target = 0;
  out->paused = 0;
  out->legacy = out->current;
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e) return e;
  out->current = rec->key_id;
  out->target = rec->target_key_id;
  out->paused = rec->target_key_id && rec->paused;
  /* A row no rotation began from: every record is under its key_id. */
  out->legacy = rec->legacy_key_id ? rec->legacy_key_id : rec->key_id;
  engram__storage__v1__blind_index_key_record__free_unpacked(rec, NULL);
  return EG_OK;
}

eg_err eg_blind_key_ids(eg_txn *t, const eg_keyring *kr, uint32_t *current, uint32_t *target) {
  eg_blind_keys k;
  eg_err e = eg_blind_keys_get(t, kr, &k);
  *current = e ? (kr ? eg_keyring_blind_key_id(kr) : 0) : k.current;
  *target = e ? 0 : k.target;
  return e;
}

uint32_t eg_blind_keys_write(const eg_blind_keys *k) { return k->target ? k->target : k->current; }

uint32_t eg_blind_keys_rec(const eg_blind_keys *k, uint32_t stored) {
  return stored ? stored : k->legacy;
}

eg_err eg_blind_key_load(eg_srv *srv) {
  eg_blind_keys k;
  eg_txn *t;
  eg_err e = eg_store_reader_new(srv->store, &t);
  if (e) return e;
  if ((e = eg_store_reader_begin(t)) == EG_OK) {
    /* No keyring: 0 stands for "no row" (eg_blind_key_of). */
    e = eg_blind_keys_get(t, NULL, &k);
    eg_store_reader_end(t);
  }
  eg_store_reader_free(t);
  if (e == EG_OK) atomic_store(&srv->blind_key_id, eg_blind_keys_write(&k));
  return e;
}

eg_err eg_blind_key_of(eg_req *r, uint32_t *id) {
  if (r->rtxn) {
    eg_blind_keys k;
    eg_err e = eg_blind_keys_get(r->rtxn, eg_srv_keys(r->srv), &k);
    *id = eg_blind_keys_write(&k);
    return e;
  }
  *id = atomic_load(&r->srv->blind_key_id);
  if (!*id) *id = eg_keyring_blind_key_id(eg_srv_keys(r->srv));
  return EG_OK;
}

/* EG_EABORTED, r->msg saying the write key moved from the one r used to
 * id: the call wrote nothing and a retry takes the new key. */
static eg_err eg_blind_moved(eg_req *r, uint32_t id) {
  snprintf(r->msg, sizeof r->msg, "the blind-index key moved from key id %u to %u (a blind-index "
           "rotation began or ended) while this write was prepared: nothing written; retry",
           (unsigned)r->blind_key_used, (unsigned)id);
  return EG_EABORTED;
}

eg_err eg_blind_key_check(eg_req *r, eg_txn *t) {
  eg_blind_keys k;
  if (!r->blind_key_used) return EG_OK;
  eg_err e = eg_blind_keys_get(t, eg_srv_keys(r->srv), &k);
  if (e) return e;
  if (eg_blind_keys_write(&k) == r->blind_key_used) return EG_OK;
  /* The next try takes the key this apply sees. */
  atomic_store(&((eg_srv *)r->srv)->blind_key_id, eg_blind_keys_write(&k));
  return eg_blind_moved(r, eg_blind_keys_write(&k));
}

static void eg_blind_ctx_wipe(void *p) { eg_blind_end(p); }

eg_err eg_blind_ctx_under(eg_req *r, uint32_t id, eg_blind_ctx **out) {
  eg_blind_ctx *ctx = EG_ARENA_NEW(r->arena, eg_blind_ctx);
  if (!ctx) return EG_ENOMEM;
  eg_err e = eg_blind_begin_id(eg_srv_keys(r->srv), id, r->tenant, ctx);
  if (e == EG_OK) e = eg_arena_defer(r->arena, eg_blind_ctx_wipe, ctx) == 0 ? EG_OK : EG_ENOMEM;
  *out = ctx;
  return e;
}

eg_err eg_blind_ctx_of(eg_req *r, eg_blind_ctx **out) {
  uint32_t id;
  eg_err e = eg_blind_key_of(r, &id);
  if (e) return e;
  /* One write key per call: tokens made under two keys would leave some
   * under a key the record does not say (eg_blind_key_check sees one). */
  if (r->blind_key_used && r->blind_key_used != id) return eg_blind_moved(r, id);
  r->blind_key_used = id;
  return eg_blind_ctx_under(r, id, out);
}

eg_err eg_blind_read_ctxs(eg_req *r, eg_txn *t, eg_blind_read *out) {
  eg_blind_keys k;
  eg_err e = eg_blind_keys_get(t, eg_srv_keys(r->srv), &k);
  if (e) return e;
  out->n = k.target && k.target != k.current ? 2 : 1;
  out->id[0] = k.current;
  out->id[1] = k.target;
  out->legacy = k.legacy;
  for (unsigned i = 0; i < out->n; i++)
    if ((e = eg_blind_ctx_under(r, out->id[i], &out->ctx[i]))) return e;
  return EG_OK;
}

unsigned eg_blind_read_pick(const eg_blind_read *q, uint32_t stored) {
  uint32_t id = stored ? stored : q->legacy;
  for (unsigned i = 0; i < q->n; i++)
    if (q->id[i] == id) return i;
  return q->n;
}
