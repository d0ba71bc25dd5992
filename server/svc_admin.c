/* engram.v1.AdminService: status, promotion and data checksums of this
 * node, for the admin role. */
#include <stdio.h>
#include <string.h>

#include "engram/v1/admin.pb-c.h"
#include "replica/replica.h"
#include "server/service.h"

static void *eg_admin_alloc(void *arena, size_t n) { return eg_arena_alloc(arena, n); }

static eg_err eg_get_status(eg_req *r, const ProtobufCMessage *msg) {
  Engram__V1__GetStatusResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__GetStatusResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__get_status_response__init(out);
  out->epoch = eg_store_epoch(r->srv->store);
  out->last_lsn = eg_store_last_lsn(r->srv->store);
  uint64_t first = 0;
  eg_err e = eg_store_wal_first(r->rtxn, &first, NULL);
  if (e != EG_OK && e != EG_ENOTFOUND) return e;
  out->wal_first_lsn = first;
  if ((e = eg_repl_status(r->srv->repl, out, eg_admin_alloc, r->arena))) return e;
  r->resp = &out->base;
  return EG_OK;
}

static eg_err eg_promote(eg_req *r, const ProtobufCMessage *msg) {
  Engram__V1__PromoteResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__PromoteResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__promote_response__init(out);
  eg_err e = eg_repl_promote(r->srv->repl, &out->epoch, &out->lsn, r->msg, sizeof r->msg);
  if (e) return e;
  r->resp = &out->base;
  return EG_OK;
}

static void eg_checksum_kv(void *arg, const char *db, const void *k, size_t klen, const void *v,
                           size_t vlen) {
  eg_sha256 *h = arg;
  uint8_t lens[8];
  /* Lengths keep ("ab","c") and ("a","bc") apart. */
  for (int i = 0; i < 4; i++) lens[i] = (uint8_t)(klen >> (24 - 8 * i));
  for (int i = 0; i < 4; i++) lens[4 + i] = (uint8_t)(vlen >> (24 - 8 * i));
  eg_sha256_update(h, db, strlen(db) + 1);
  eg_sha256_update(h, lens, sizeof lens);
  eg_sha256_update(h, k, klen);
  eg_sha256_update(h, v, vlen);
}

static eg_err eg_checksum(eg_req *r, const ProtobufCMessage *msg) {
  Engram__V1__ChecksumResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__ChecksumResponse);
  char *hex = eg_arena_alloc(r->arena, 65);
  uint8_t d[32];
  eg_sha256 h;
  if (!out || !hex) return EG_ENOMEM;
  engram__v1__checksum_response__init(out);
  eg_sha256_init(&h);
  eg_err e = eg_store_txn_lsn(r->rtxn, &out->lsn);
  if (!e) e = eg_store_visit_data(r->rtxn, eg_checksum_kv, &h);
  if (e) return e;
  eg_sha256_final(&h, d);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  out->sha256 = hex;
  r->resp = &out->base;
  return EG_OK;
}

#define EG_ADMIN_PATH(name) "/engram.v1.AdminService/" #name

const eg_method eg_admin_methods[] = {
    {.path = EG_ADMIN_PATH(GetStatus),
     .in = &engram__v1__get_status_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_get_status},
    /* A read in the table's terms: it runs on the worker, which hands the
     * epoch record to the writer and waits for its commit. */
    {.path = EG_ADMIN_PATH(Promote),
     .in = &engram__v1__promote_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_promote,
     .no_store = 1},
    {.path = EG_ADMIN_PATH(Checksum),
     .in = &engram__v1__checksum_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .read = eg_checksum},
    {.path = NULL},
};
