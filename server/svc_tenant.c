/* AdminService: DeleteTenant: a whole tenant's erasure, records and data keys.
 *
 * As DeleteUser (server/svc_user.c), for every user of a tenant and the
 * tenant's own data key: prepare destroys the data keys, then each apply
 * erases at most --erase-batch keys of the tenant's records and sets
 * r->more until none is left, each step logged as an erasure (replicas
 * and the WAL archive drop what came before it). */
#include <stdio.h>
#include <string.h>

#include "engram/v1/admin.pb-c.h"
#include "server/data_keys.h"
#include "server/service.h"
#include "server/validate.h"

struct eg_dt_state {
  const char *tenant;
  uint64_t keys_destroyed;
};

/* The data keys go first, in prepare (on the worker: a durable key-store
 * commit of its own, not the writer's), before any erase step commits:
 * from then on every copy of the tenant's ciphertext reads as ERASED. A
 * crash before the last step leaves records that no longer open, never
 * plaintext, and the retried call (no key left to destroy) erases them.
 * Writes in flight sealed under these keys are refused by their own
 * apply's check (ABORTED), as for DeleteUser (server/svc_user.c). */
static eg_err eg_dt_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__DeleteTenantRequest *in = (const void *)msg;
  eg_err e = eg_validate_id("tenant", in->tenant, 1, r->msg, sizeof r->msg);
  if (e != EG_OK) return e;
  if (strcmp(in->confirm, in->tenant) != 0)
    return eg_invalid(r->msg, sizeof r->msg, "confirm",
                      "must repeat the tenant to delete ('%s'): deleting a tenant cannot be "
                      "undone",
                      in->tenant);
  struct eg_dt_state *st = EG_ARENA_NEW(r->arena, struct eg_dt_state);
  if (!st) return EG_ENOMEM;
  st->tenant = in->tenant;
  r->state = st;
  /* Under way until the call is freed: no rotation gives a user of the
   * tenant a key meanwhile (server/data_keys.h). */
  if ((e = eg_data_keys_erasure_hold(r->srv->data_keys, r->arena, in->tenant, NULL))) return e;
  if ((e = eg_data_keys_erase_tenant(r->srv->data_keys, in->tenant, &st->keys_destroyed)))
    snprintf(r->msg, sizeof r->msg, "tenant: the data keys of '%s' could not be destroyed: %s",
             in->tenant, eg_err_msg(e));
  return e;
}

static eg_err eg_dt_apply(eg_req *r, eg_txn *t) {
  const struct eg_dt_state *st = r->state;
  uint64_t deleted = 0;
  int done = 0;
  eg_err e = eg_store_tenant_erase_step(t, st->tenant, (uint64_t)r->srv->cfg->erase_batch,
                                        &deleted, &done);
  if (e != EG_OK) return e;
  eg_store_mark_erasure(t);
  if (!done) {
    snprintf(r->msg, sizeof r->msg, "tenant '%s': %llu records deleted so far", st->tenant,
             (unsigned long long)deleted);
    r->more = 1;
    return EG_OK;
  }
  Engram__V1__DeleteTenantResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__DeleteTenantResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__delete_tenant_response__init(out);
  out->data_keys_destroyed = st->keys_destroyed;
  out->records_deleted = deleted;
  r->resp = &out->base;
  return EG_OK;
}

const eg_method eg_tenant_methods[] = {
    {.path = "/engram.v1.AdminService/DeleteTenant",
     .in = &engram__v1__delete_tenant_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .prepare = eg_dt_prepare,
     .apply = eg_dt_apply},
    {.path = NULL},
};
