/* The key jobs' state (storage/key_jobs.h). */
#include <assert.h>
#include <string.h>

#include "storage/internal.h"

#define EG_BLIND_KEY_DESC (&engram__storage__v1__blind_index_key_record__descriptor)
#define EG_KEY_JOB_BLIND "blind_index"

static void eg_blind_key_key(eg_key *k) {
  eg_key_init(k);
  eg_err e = eg_key_raw(k, EG_KEY_JOB_BLIND, strlen(EG_KEY_JOB_BLIND));
  assert(e == EG_OK); /* a short constant always fits */
  (void)e;
}

eg_err eg_store_blind_key_get(eg_txn *t, eg_blind_key_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t) || !out) return EG_EINVAL;
  eg_blind_key_key(&k);
  return eg_store__get_msg(t->txn, t->s->key_jobs, &k, EG_BLIND_KEY_DESC,
                           (ProtobufCMessage **)out);
}

eg_err eg_store_blind_key_put(eg_txn *t, const eg_blind_key_rec *rec) {
  eg_key k;
  if (!eg_txn_writable(t) || !rec || rec->key_id == 0) return EG_EINVAL;
  assert(rec->base.descriptor == EG_BLIND_KEY_DESC);
  eg_blind_key_key(&k);
  return eg_store__put_msg(t, t->s->key_jobs, &k, &rec->base, 0);
}
