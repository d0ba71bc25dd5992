/* The store's blind-index key id (server/blind_key.h). */
#include "server/blind_key.h"

#include <stdatomic.h>

eg_err eg_blind_key_ids(eg_txn *t, const eg_keyring *kr, uint32_t *current, uint32_t *target) {
  eg_blind_key_rec *rec;
  eg_err e = eg_store_blind_key_get(t, &rec);
  *current = kr ? eg_keyring_blind_key_id(kr) : 0;
  *target = 0;
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e) return e;
  *current = rec->key_id;
  *target = rec->target_key_id;
  engram__storage__v1__blind_index_key_record__free_unpacked(rec, NULL);
  return EG_OK;
}

/* eg_blind_key_ids in a read txn of its own. */
static eg_err eg_blind_key_read(eg_store *store, const eg_keyring *kr, uint32_t *current,
                                uint32_t *target) {
  eg_txn *t;
  eg_err e = eg_store_reader_new(store, &t);
  if (e) return e;
  if ((e = eg_store_reader_begin(t)) == EG_OK) {
    e = eg_blind_key_ids(t, kr, current, target);
    eg_store_reader_end(t);
  }
  eg_store_reader_free(t);
  return e;
}

eg_err eg_blind_key_load(eg_srv *srv) {
  uint32_t current, target;
  /* No keyring: 0 stands for "no row" (eg_blind_key_of). */
  eg_err e = eg_blind_key_read(srv->store, NULL, &current, &target);
  if (e == EG_OK) atomic_store(&srv->blind_key_id, current);
  return e;
}

eg_err eg_blind_key_of(eg_req *r, uint32_t *id) {
  uint32_t target;
  if (r->rtxn) return eg_blind_key_ids(r->rtxn, eg_srv_keys(r->srv), id, &target);
  *id = atomic_load(&r->srv->blind_key_id);
  if (!*id) *id = eg_keyring_blind_key_id(eg_srv_keys(r->srv));
  return EG_OK;
}
