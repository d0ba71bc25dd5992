/* The bounded erasure of a whole tenant (DeleteTenant): every key of every
 * data DB that belongs to it (storage.h, eg_store_tenant_erase_step). */
#include <stddef.h>
#include <string.h>

#include "storage/internal.h"

/* The data DBs whose keys all start with u8len tenant (storage.h,
 * memories.h, checkpoints.h, store_items.h, message_index.h, and the
 * schema 7 DBs), records before their indexes; memory_users last, as it
 * holds the progress. Not here: store_items (its cross-tenant expiry
 * index: eg_store__erase_tenant_items), sweep_due (kind first), and the
 * DBs of no tenant (index_state, key_jobs, meta, wal). */
static const size_t eg_tenant_dbs[] = {
    offsetof(eg_store, sessions),
    offsetof(eg_store, messages),
    offsetof(eg_store, idempotency),
    offsetof(eg_store, memories),
    offsetof(eg_store, checkpoints),
    offsetof(eg_store, checkpoint_writes),
    offsetof(eg_store, store_namespaces),
    offsetof(eg_store, sessions_by_user),
    offsetof(eg_store, sessions_by_activity),
    offsetof(eg_store, session_terms),
    offsetof(eg_store, memories_by_user),
    offsetof(eg_store, memory_vectors),
    offsetof(eg_store, memory_terms),
    offsetof(eg_store, checkpoints_by_user),
    offsetof(eg_store, message_terms),
    offsetof(eg_store, message_index_stats),
    offsetof(eg_store, retention),
    offsetof(eg_store, tenant_limits),
    offsetof(eg_store, tenant_usage),
    offsetof(eg_store, memory_users),
};

/* The progress of a tenant's erasure, kept between its steps (a step
 * rolled back with its txn is simply redone, never counted twice):
 * memory_users  u8len T | 0x00 "tenant-erase" -> deleted u64 BE. A user's
 * keys there are u8len T | u8len U with U non-empty, so no user's key
 * starts so. */
#define EG_TENANT_ERASE_SUFFIX "\0tenant-erase"
#define EG_TENANT_ERASE_SUFFIX_LEN (sizeof EG_TENANT_ERASE_SUFFIX - 1)

static eg_err eg_progress_get(eg_txn *t, const eg_key *k, uint64_t *deleted) {
  MDB_val key = {k->len, (void *)k->buf}, v;
  *deleted = 0;
  int rc = mdb_get(t->txn, t->s->memory_users, &key, &v);
  if (rc == MDB_NOTFOUND) return EG_OK;
  if (rc) return eg_store__err(rc);
  if (v.mv_size != 8) return EG_ECORRUPT;
  *deleted = eg_be64_get(v.mv_data);
  return EG_OK;
}

eg_err eg_store_tenant_erase_step(eg_txn *t, const char *tenant, uint64_t budget,
                                  uint64_t *deleted, int *done) {
  eg_key range, pk;
  uint64_t spent = 0, n;
  int left = 0;
  if (!eg_txn_writable(t) || budget == 0) return EG_EINVAL;
  *done = 0;
  eg_err e = eg_key_tenant(&range, tenant);
  if (!e) {
    pk = range;
    e = eg_key_raw(&pk, EG_TENANT_ERASE_SUFFIX, EG_TENANT_ERASE_SUFFIX_LEN);
  }
  if (!e) e = eg_progress_get(t, &pk, &n);
  /* Out of the way of memory_users' range erase; put back below while
   * anything is left. */
  if (!e) e = eg_store__del_quiet(t, t->s->memory_users, &pk);
  if (!e) e = eg_store__erase_tenant_items(t, tenant, budget, &spent, &n, &left);
  for (unsigned kind = 1; !e && !left && kind <= EG_SWEEP_KIND_MAX; kind++) {
    eg_key sk;
    if (!(e = eg_key_sweep_tenant(&sk, kind, tenant)))
      e = eg_store__erase_range(t, t->s->sweep_due, &sk, budget, &spent, &n, &left);
  }
  for (size_t i = 0; !e && !left && i < sizeof eg_tenant_dbs / sizeof eg_tenant_dbs[0]; i++) {
    MDB_dbi dbi = *(const MDB_dbi *)((const char *)t->s + eg_tenant_dbs[i]);
    e = eg_store__erase_range(t, dbi, &range, budget, &spent, &n, &left);
  }
  if (e) return e;
  *deleted = n;
  if (!left) return *done = 1, EG_OK;
  uint8_t b[8];
  eg_be64_put(b, n);
  return eg_store__put(t, t->s->memory_users, &pk, b, sizeof b);
}
