/*
 * engram.v1.MemoryService batches: BatchCreateMemories (1 ..
 * EG_BATCH_CREATE_MAX CreateMemory requests) and BatchDeleteMemories (1 ..
 * EG_BATCH_DELETE_MAX ids). Each is one write: its operations run in
 * request order, each in a nested txn of its own inside the call's, so one
 * that fails writes nothing and the others go on, and a create is
 * de-duplicated against the batch's earlier memories as against stored
 * ones. The operations are CreateMemory's and DeleteMemory's own
 * (svc_memory.c). A storage failure (map full, disk, memory) is the whole
 * call's: the writer rolls the write back or replays it. The whole batch
 * is bounded by the writer's limits on one write (server/writer.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/v1/memory.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "server/blind_key.h"
#include "server/convert.h"
#include "server/memory_svc.h"
#include "server/service.h"
#include "server/validate.h"

/* Errors that are not one operation's outcome but the write's: the txn
 * must be rolled back (and, for a full map, replayed after it grows). */
static int eg_batch_fatal(eg_err e) {
  return e == EG_EMAPFULL || e == EG_EMAPBUSY || e == EG_ENOMEM || e == EG_EIO || e == EG_ETXNFULL ||
         e == EG_ENOSPC || e == EG_EBROKEN;
}

/* The google.rpc.Status of one operation's outcome: its code, and its
 * message (the handler's "<field>: <problem>", else the error's). */
static Google__Rpc__Status *eg_batch_status(eg_req *r, eg_err e, const char *msg) {
  Google__Rpc__Status *st = EG_ARENA_NEW(r->arena, Google__Rpc__Status);
  if (!st) return NULL;
  google__rpc__status__init(st);
  st->code = eg_err_grpc_code(e);
  const char *m = msg[0] ? msg : eg_err_msg(e);
  if (e != EG_OK && !(st->message = eg_arena_strndup(r->arena, m, strlen(m)))) return NULL;
  return st;
}

/* Runs op on sub (one operation's request) in a nested txn of t: kept if
 * it succeeds and its blind-index key is still the write key, rolled back
 * if not. Returns its outcome, or a fatal error
 * (eg_batch_fatal) as the batch's. */
static eg_err eg_batch_run(eg_txn *t, eg_req *sub, eg_apply_fn op, eg_err *outcome) {
  eg_txn *st;
  eg_err e = eg_store_sub_begin(t, &st);
  if (e) return e;
  *outcome = op(sub, st);
  /* Each operation took its own blind context in prepare: the dispatcher's
   * check sees only the batch's request, so each is checked here. */
  if (*outcome == EG_OK) *outcome = eg_blind_key_check(sub, st);
  if (*outcome != EG_OK) {
    eg_store_sub_abort(st);
    return eg_batch_fatal(*outcome) ? *outcome : EG_OK;
  }
  return eg_store_sub_commit(st);
}

/* ==== BatchCreateMemories ==================================================== */

/* Each request prepared on the worker (its own eg_req: state, or the
 * failure prepare gave it). */
struct eg_bc_item {
  eg_req req;
  eg_err err;
};

struct eg_bc_state {
  size_t n;
  struct eg_bc_item *items;
};

eg_err eg_batch_create_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__BatchCreateMemoriesRequest *in = (const void *)msg;
  if (in->n_requests == 0 || in->n_requests > EG_BATCH_CREATE_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "requests", "%zu given, must be 1..%d", in->n_requests,
                      EG_BATCH_CREATE_MAX);
  struct eg_bc_state *st = EG_ARENA_NEW(r->arena, struct eg_bc_state);
  if (!st || !(st->items = EG_ARENA_ARRAY(r->arena, struct eg_bc_item, in->n_requests))) return EG_ENOMEM;
  st->n = in->n_requests;
  for (size_t i = 0; i < st->n; i++) {
    struct eg_bc_item *it = &st->items[i];
    it->req = *r;
    it->req.state = NULL;
    it->req.msg[0] = '\0';
    it->err = eg_create_memory_prepare(&it->req, &in->requests[i]->base);
    if (it->err == EG_ENOMEM) return EG_ENOMEM;
  }
  r->state = st;
  return EG_OK;
}

/* Adds result to out, with its memory while the reply budget lasts: past
 * --max-reply-bytes later results come without it (GetMemory reads it). */
static void eg_bc_take(eg_reply_budget *b, Engram__V1__BatchCreateMemoriesResult *res) {
  if (eg_reply_budget_take(b, &res->base) || !res->response) return;
  res->response->memory = NULL;
  eg_reply_budget_charge(b, protobuf_c_message_get_packed_size(&res->base) + 8);
}

eg_err eg_batch_create_apply(eg_req *r, eg_txn *t) {
  const struct eg_bc_state *st = r->state;
  Engram__V1__BatchCreateMemoriesResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__BatchCreateMemoriesResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__batch_create_memories_response__init(out);
  out->results = EG_ARENA_ARRAY(r->arena, Engram__V1__BatchCreateMemoriesResult *, st->n);
  if (!out->results) return EG_ENOMEM;
  eg_reply_budget budget;
  eg_reply_budget_init(&budget, r);
  for (size_t i = 0; i < st->n; i++) {
    /* A copy: apply may run again (after the map grows) and must find its
     * state as prepare left it. */
    eg_req sub = st->items[i].req;
    eg_err outcome = st->items[i].err, e;
    sub.arena = r->arena;
    sub.resp = NULL;
    if (outcome == EG_OK && (e = eg_batch_run(t, &sub, eg_create_memory_apply, &outcome))) return e;
    Engram__V1__BatchCreateMemoriesResult *res =
        EG_ARENA_NEW(r->arena, Engram__V1__BatchCreateMemoriesResult);
    if (!res) return EG_ENOMEM;
    engram__v1__batch_create_memories_result__init(res);
    if (!(res->status = eg_batch_status(r, outcome, sub.msg))) return EG_ENOMEM;
    if (outcome == EG_OK) res->response = (Engram__V1__CreateMemoryResponse *)sub.resp;
    eg_bc_take(&budget, res);
    out->results[out->n_results++] = res;
  }
  r->resp = &out->base;
  return EG_OK;
}

/* ==== BatchDeleteMemories ===================================================== */

/* A delete's result is its id, a status of at most one r->msg and a few
 * bytes of framing, so a whole batch's reply stays under the floor of
 * --max-reply-bytes (1 MiB, server/config.c). */
_Static_assert(EG_BATCH_DELETE_MAX * (EG_ID_MAX + sizeof(((eg_req *)0)->msg) + 32) + EG_REPLY_RESERVE <
                   (1 << 20),
               "a BatchDeleteMemories reply fits any --max-reply-bytes");

/* An id and where it was in the request. */
struct eg_bd_id {
  const char *id;
  size_t i;
};

static int eg_bd_cmp(const void *a, const void *b) {
  const struct eg_bd_id *x = a, *y = b;
  int c = strcmp(x->id, y->id);
  return c ? c : (x->i > y->i) - (x->i < y->i);
}

eg_err eg_batch_delete_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__BatchDeleteMemoriesRequest *in = (const void *)msg;
  char field[32];
  size_t n = in->n_memory_ids;
  eg_err e;
  if (n == 0 || n > EG_BATCH_DELETE_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "memory_ids", "%zu given, must be 1..%d", n,
                      EG_BATCH_DELETE_MAX);
  for (size_t i = 0; i < n; i++) {
    snprintf(field, sizeof field, "memory_ids[%zu]", i);
    if ((e = eg_validate_id(field, in->memory_ids[i], 1, r->msg, sizeof r->msg))) return e;
  }
  /* Each id once: sorted, a repeat sits right after its first. */
  struct eg_bd_id *ids = EG_ARENA_ARRAY(r->arena, struct eg_bd_id, n);
  if (!ids) return EG_ENOMEM;
  for (size_t i = 0; i < n; i++) ids[i] = (struct eg_bd_id){in->memory_ids[i], i};
  qsort(ids, n, sizeof *ids, eg_bd_cmp);
  for (size_t i = 1; i < n; i++)
    if (strcmp(ids[i - 1].id, ids[i].id) == 0) {
      snprintf(field, sizeof field, "memory_ids[%zu]", ids[i].i);
      return eg_invalid(r->msg, sizeof r->msg, field, "'%s' is also memory_ids[%zu] (each id at most once)",
                        ids[i].id, ids[i - 1].i);
    }
  r->state = (void *)in;
  return EG_OK;
}

/* One delete of the batch (sub->state of eg_bd_one). */
struct eg_bd_op {
  const Engram__V1__BatchDeleteMemoriesRequest *in;
  size_t i;
  int purged;
};

static eg_err eg_bd_one(eg_req *sub, eg_txn *t) {
  struct eg_bd_op *op = sub->state;
  return eg_memory_delete(sub, t, op->in->memory_ids[op->i], op->in->purge, 0, NULL, &op->purged);
}

eg_err eg_batch_delete_apply(eg_req *r, eg_txn *t) {
  const Engram__V1__BatchDeleteMemoriesRequest *in = r->state;
  Engram__V1__BatchDeleteMemoriesResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__BatchDeleteMemoriesResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__batch_delete_memories_response__init(out);
  out->results = EG_ARENA_ARRAY(r->arena, Engram__V1__BatchDeleteMemoriesResult *, in->n_memory_ids);
  if (!out->results) return EG_ENOMEM;
  for (size_t i = 0; i < in->n_memory_ids; i++) {
    struct eg_bd_op op = {.in = in, .i = i};
    eg_req sub = *r;
    eg_err outcome, e;
    sub.state = &op;
    sub.msg[0] = '\0';
    if ((e = eg_batch_run(t, &sub, eg_bd_one, &outcome))) return e;
    Engram__V1__BatchDeleteMemoriesResult *res =
        EG_ARENA_NEW(r->arena, Engram__V1__BatchDeleteMemoriesResult);
    if (!res) return EG_ENOMEM;
    engram__v1__batch_delete_memories_result__init(res);
    res->memory_id = in->memory_ids[i];
    res->purged = outcome == EG_OK && op.purged;
    if (!(res->status = eg_batch_status(r, outcome, sub.msg))) return EG_ENOMEM;
    out->results[out->n_results++] = res;
  }
  r->resp = &out->base;
  return EG_OK;
}
