/* AdminService: RotateDataKeys (server/key_rotation.h) and
 * RotateBlindIndexKey (server/blind_rotation.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "engram/v1/admin.pb-c.h"
#include "server/blind_key.h"
#include "server/blind_rotation.h"
#include "server/data_keys.h"
#include "server/key_rotation.h"
#include "server/reindex.h"
#include "server/service.h"
#include "server/validate.h"

/* What prepare leaves for apply. */
typedef struct {
  const char *tenant, *user;
  uint64_t users; /* rotated: the rotation's total */
} eg_rdk_state;

/* FAILED_PRECONDITION naming the running rotation, or EG_OK when none
 * runs, as t sees it. */
static eg_err eg_rdk_idle(eg_req *r, eg_txn *t) {
  eg_dk_rotation_rec *row;
  eg_err e = eg_store_dk_rotation_get(t, &row);
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e) return e;
  if (row->running) {
    const char *scope = eg_dk_rotation_scope(r->arena, row);
    snprintf(r->msg, sizeof r->msg, "a data-key rotation is running (%s%s, %llu of %llu users "
             "done): wait for it to finish (engram admin keys status)",
             scope && scope[0] ? "of " : "of every user", scope ? scope : "",
             (unsigned long long)row->done, (unsigned long long)row->total);
    e = EG_EPRECOND;
  }
  engram__storage__v1__data_key_rotation_record__free_unpacked(row, NULL);
  return e;
}

typedef struct {
  eg_req *r;
  eg_rdk_state *st;
  eg_err err;
} eg_rdk_walk;

/* Rotates each user of the scope: every user, or the users of a tenant
 * (the tenant's own key, user "", among them). */
static int eg_rdk_rotate_one(void *arg, const char *tenant, const char *user, uint32_t current,
                             uint32_t oldest) {
  eg_rdk_walk *w = arg;
  uint32_t gen;
  (void)current;
  (void)oldest;
  if (w->st->tenant[0] && strcmp(w->st->tenant, tenant) != 0) return 0;
  w->err = eg_data_keys_rotate(w->r->srv->data_keys, eg_srv_keys(w->r->srv), tenant, user, &gen);
  if (w->err == EG_EERASED) { /* erased since the walk read it: not rotated, not counted */
    w->err = EG_OK;
    return 0;
  }
  if (w->err) {
    snprintf(w->r->msg, sizeof w->r->msg, "key store: cannot rotate the data key of user \"%s\" "
             "of tenant %s: %s (%llu users rotated before)", user, tenant,
             eg_err_msg(w->err), (unsigned long long)w->st->users);
    return 1;
  }
  w->st->users++;
  return 0;
}

/* Checks the request and that no rotation runs, then makes the new data
 * keys (durable key-store commits, on the worker: the primary's, since a
 * replica forwards writes and a fenced primary refuses them before
 * prepare). The key store is not the data store's
 * txn: keys rotated by a call that then fails stay current, unused until
 * the next rotation re-seals under them. */
static eg_err eg_rdk_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__RotateDataKeysRequest *in = (const void *)msg;
  eg_rdk_state *st = EG_ARENA_NEW(r->arena, eg_rdk_state);
  eg_err e;
  if (!st) return EG_ENOMEM;
  if ((e = eg_validate_id("tenant", in->tenant, 0, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("user_id", in->user_id, 0, r->msg, sizeof r->msg)))
    return e;
  if (in->user_id[0] && !in->tenant[0])
    return eg_invalid(r->msg, sizeof r->msg, "user_id", "needs tenant (the user's tenant)");
  if ((e = eg_rdk_idle(r, r->rtxn))) return e;
  *st = (eg_rdk_state){.tenant = in->tenant, .user = in->user_id};
  if (in->user_id[0]) {
    uint32_t gen;
    e = eg_data_keys_rotate(r->srv->data_keys, eg_srv_keys(r->srv), in->tenant, in->user_id,
                            &gen);
    /* An erased user gets no key back from a rotation. */
    if (e == EG_EERASED) {
      snprintf(r->msg, sizeof r->msg, "user \"%s\" of tenant %s was erased (its data keys "
               "destroyed): nothing to rotate", in->user_id, in->tenant);
      return EG_ENOTFOUND;
    }
    if (e)
      snprintf(r->msg, sizeof r->msg, "key store: cannot rotate the data key of user \"%s\" of "
               "tenant %s: %s", in->user_id, in->tenant, eg_err_msg(e));
    st->users = 1;
  } else {
    eg_rdk_walk w = {.r = r, .st = st};
    int rc = eg_data_keys_each_user(r->srv->data_keys, eg_rdk_rotate_one, &w);
    e = rc < 0 ? (eg_err)-rc : w.err;
    if (rc < 0) snprintf(r->msg, sizeof r->msg, "key store: cannot list the users: %s",
                         eg_err_msg(e));
  }
  if (e) return e;
  r->state = st;
  return EG_OK;
}

/* Stores the rotation's state (running, from the first user), unless
 * another began meanwhile. */
static eg_err eg_rdk_apply(eg_req *r, eg_txn *t) {
  const eg_rdk_state *st = r->state;
  eg_dk_rotation_rec row = ENGRAM__STORAGE__V1__DATA_KEY_ROTATION_RECORD__INIT;
  Engram__V1__RotateDataKeysResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__RotateDataKeysResponse);
  if (!out) return EG_ENOMEM;
  eg_err e = eg_rdk_idle(r, t);
  if (e) return e;
  row.scope_tenant = (char *)st->tenant;
  row.scope_user = (char *)st->user;
  row.running = 1;
  row.total = st->users;
  row.start_time_us = r->now_us;
  if ((e = eg_store_dk_rotation_put(t, &row))) return e;
  engram__v1__rotate_data_keys_response__init(out);
  if ((e = eg_dk_rotation_api(r, &row, &out->status))) return e;
  r->resp = &out->base;
  return EG_OK;
}

/* ---- RotateBlindIndexKey ----------------------------------------------------- */

/* The request has no fields: everything is decided in apply, from what
 * its txn reads. */
static eg_err eg_rbk_prepare(eg_req *r, const ProtobufCMessage *msg) {
  (void)r;
  (void)msg;
  return EG_OK;
}

/* FAILED_PRECONDITION while a tokenizer reindex runs (the two never run
 * together: server/blind_rotation.h), as t sees the index states. */
static eg_err eg_rbk_no_reindex(eg_req *r, eg_txn *t) {
  for (unsigned i = 0; i < EG_REINDEX_INDEXES; i++) {
    eg_index_state_rec *st;
    eg_err e = eg_store_index_state_get(t, eg_reindex_name(i), &st);
    if (e == EG_ENOTFOUND) continue;
    if (e) return e;
    if (st->target) {
      snprintf(r->msg, sizeof r->msg, "a reindex of %s to tokenizer version %u is running (%llu "
               "of %llu records): start the blind-index rotation when it is done (engram admin "
               "status)", eg_reindex_name(i), (unsigned)st->target,
               (unsigned long long)st->done, (unsigned long long)st->total);
      e = EG_EPRECOND;
    }
    engram__storage__v1__index_state_record__free_unpacked(st, NULL);
    if (e) return e;
  }
  return EG_OK;
}

static void eg_rbk_row_free(void *p) {
  engram__storage__v1__blind_index_key_record__free_unpacked(p, NULL);
}

/* row (paused) resumed in t: a new pass from the first kind toward its
 * target, its stuck counts and problem cleared. */
static eg_err eg_rbk_resume(eg_txn *t, eg_blind_key_rec *row) {
  eg_blind_rotation_pass_begin(row, row->pass + 1);
  eg_err e = eg_blind_rotation_total(t, &row->total);
  return e ? e : eg_store_blind_key_put(t, row);
}

/* The rotation to the keyring's primary, begun in t unless one runs (its
 * state answered as it is), one is paused (resumed, toward its own
 * target), or the index is under the primary already (nothing written). */
static eg_err eg_rbk_apply(eg_req *r, eg_txn *t) {
  const eg_keyring *kr = eg_srv_keys(r->srv);
  uint32_t primary = eg_keyring_primary_id(kr);
  eg_blind_key_rec *stored = NULL, row = ENGRAM__STORAGE__V1__BLIND_INDEX_KEY_RECORD__INIT;
  eg_blind_keys k;
  Engram__V1__RotateBlindIndexKeyResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__RotateBlindIndexKeyResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__rotate_blind_index_key_response__init(out);
  eg_err e = eg_blind_keys_get(t, kr, &k);
  if (e) return e;
  e = eg_store_blind_key_get(t, &stored);
  if (e && e != EG_ENOTFOUND) return e;
  /* The answer may point into it. */
  if (stored && eg_arena_defer(r->arena, eg_rbk_row_free, stored) != 0) {
    eg_rbk_row_free(stored);
    return EG_ENOMEM;
  }
  if (stored) {
    row = *stored;
  } else {
    row.key_id = k.current;
    row.problem = "";
  }
  if (k.paused) {
    if ((e = eg_rbk_no_reindex(r, t)) == EG_OK && (e = eg_rbk_resume(t, &row)) == EG_OK)
      e = eg_blind_rotation_api(r, &row, &out->status);
  } else if (k.target || k.current == primary) {
    /* Running (reported, idempotent), or nothing to do. */
    e = eg_blind_rotation_api(r, &row, &out->status);
  } else if ((e = eg_rbk_no_reindex(r, t)) == EG_OK) {
    row.key_id = k.current;
    row.target_key_id = primary;
    row.legacy_key_id = k.legacy; /* the first rotation's, kept after */
    eg_blind_rotation_pass_begin(&row, 1);
    row.start_time_us = r->now_us;
    row.finish_time_us = 0;
    if (!(e = eg_blind_rotation_total(t, &row.total)) && !(e = eg_store_blind_key_put(t, &row)))
      e = eg_blind_rotation_api(r, &row, &out->status);
    /* Writes prepared from now on take the target (a stale one is
     * refused and retried: eg_blind_key_check). */
    if (!e) atomic_store(&((eg_srv *)r->srv)->blind_key_id, primary);
  }
  if (e) return e;
  r->resp = &out->base;
  return EG_OK;
}

#define EG_KR_PATH(name) "/engram.v1.AdminService/" #name

const eg_method eg_key_rotation_methods[] = {
    {.path = EG_KR_PATH(RotateDataKeys),
     .in = &engram__v1__rotate_data_keys_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .prepare = eg_rdk_prepare,
     .apply = eg_rdk_apply,
     .prepare_reads = 1},
    {.path = EG_KR_PATH(RotateBlindIndexKey),
     .in = &engram__v1__rotate_blind_index_key_request__descriptor,
     .role = EG_ROLE_ADMIN,
     .prepare = eg_rbk_prepare,
     .apply = eg_rbk_apply},
    {.path = NULL},
};
