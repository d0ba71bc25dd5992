/* The key jobs' state (storage/key_jobs.h). */
#include <assert.h>
#include <string.h>

#include "storage/internal.h"

#define EG_BLIND_KEY_DESC (&engram__storage__v1__blind_index_key_record__descriptor)
#define EG_DK_ROTATION_DESC (&engram__storage__v1__data_key_rotation_record__descriptor)
#define EG_KEY_JOB_BLIND "blind_index"
#define EG_KEY_JOB_DATA_KEYS "data_keys"

static void eg_job_key(eg_key *k, const char *name) {
  eg_key_init(k);
  eg_err e = eg_key_raw(k, name, strlen(name));
  assert(e == EG_OK); /* a short constant always fits */
  (void)e;
}

eg_err eg_store_blind_key_get(eg_txn *t, eg_blind_key_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t) || !out) return EG_EINVAL;
  eg_job_key(&k, EG_KEY_JOB_BLIND);
  return eg_store__get_msg(t->txn, t->s->key_jobs, &k, EG_BLIND_KEY_DESC,
                           (ProtobufCMessage **)out);
}

eg_err eg_store_blind_key_put(eg_txn *t, const eg_blind_key_rec *rec) {
  eg_key k;
  if (!eg_txn_writable(t) || !rec || rec->key_id == 0) return EG_EINVAL;
  assert(rec->base.descriptor == EG_BLIND_KEY_DESC);
  eg_job_key(&k, EG_KEY_JOB_BLIND);
  return eg_store__put_msg(t, t->s->key_jobs, &k, &rec->base, 0);
}

eg_err eg_store_dk_rotation_get(eg_txn *t, eg_dk_rotation_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t) || !out) return EG_EINVAL;
  eg_job_key(&k, EG_KEY_JOB_DATA_KEYS);
  return eg_store__get_msg(t->txn, t->s->key_jobs, &k, EG_DK_ROTATION_DESC,
                           (ProtobufCMessage **)out);
}

eg_err eg_store_dk_rotation_put(eg_txn *t, const eg_dk_rotation_rec *rec) {
  eg_key k;
  if (!eg_txn_writable(t) || !rec || rec->cursor.len > EG_KEY_MAX) return EG_EINVAL;
  assert(rec->base.descriptor == EG_DK_ROTATION_DESC);
  eg_job_key(&k, EG_KEY_JOB_DATA_KEYS);
  return eg_store__put_msg(t, t->s->key_jobs, &k, &rec->base, 0);
}
