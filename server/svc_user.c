/*
 * engram.v1.UserService: erasure of everything a user has in the caller's
 * tenant, and per-user statistics.
 *
 * DeleteUser is one call but many write transactions: each apply erases at
 * most --erase-batch keys and sets r->more, so the transport hands the call
 * back to the writer (behind whatever else is queued) until the user is
 * gone. The progress (and the counts) live in the store, so an apply that
 * is rolled back and replayed never counts twice.
 */
#include <stdio.h>
#include <string.h>

#include "engram/v1/user.pb-c.h"
#include "server/service.h"
#include "server/validate.h"

/* ==== DeleteUser ============================================================== */

static eg_err eg_du_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__DeleteUserRequest *in = (const void *)msg;
  r->state = (void *)in->user_id;
  return eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg);
}

static eg_err eg_du_apply(eg_req *r, eg_txn *t) {
  eg_erase_counts c = {0};
  int done = 0;
  eg_err e = eg_store_user_erase_step(t, r->tenant, r->state, (uint64_t)r->srv->cfg->erase_batch,
                                      &c, &done);
  if (e != EG_OK) return e;
  eg_store_mark_erasure(t);
  if (!done) {
    r->more = 1;
    return EG_OK;
  }
  Engram__V1__DeleteUserResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__DeleteUserResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__delete_user_response__init(out);
  out->deleted_sessions = (int64_t)c.sessions;
  out->deleted_messages = (int64_t)c.messages;
  out->deleted_memories = (int64_t)c.memories;
  out->batches = (int64_t)c.steps;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== GetUserStats ============================================================ */

struct eg_stats_scan {
  int64_t now_us;
  uint64_t by_type[7][5]; /* [type][state], unexpired */
  uint64_t by_state[5];
  uint64_t expired;
};

static int eg_stats_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m,
                          const uint8_t *vec) {
  struct eg_stats_scan *s = arg;
  if (m->expire_us && m->expire_us <= s->now_us) {
    s->expired++;
    return 0;
  }
  if (m->state >= 1 && m->state <= EG_MSTATE_SUPERSEDED) {
    s->by_state[m->state]++;
    if (m->type >= 1 && m->type <= 6) s->by_type[m->type][m->state]++;
  }
  return 0;
}

static eg_err eg_user_stats(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__GetUserStatsRequest *in = (const void *)msg;
  struct eg_stats_scan s = {.now_us = r->now_us};
  eg_memory_counters c;
  uint64_t sessions = 0;
  eg_err e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg);
  /* Counted from the meta rather than the counters, so that expired
   * memories are told apart: O(memories) over small fixed values. */
  if (!e) e = eg_store_memories_scan(r->rtxn, r->tenant, in->user_id, NULL, 0, 0, eg_stats_visit, &s);
  if (!e) e = eg_store_memory_counters(r->rtxn, r->tenant, in->user_id, &c);
  if (!e) e = eg_store_user_sessions_count(r->rtxn, r->tenant, in->user_id, &sessions);
  if (e) return e;
  Engram__V1__GetUserStatsResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__GetUserStatsResponse);
  Engram__V1__MemoryTypeCount *rows = EG_ARENA_ARRAY(r->arena, Engram__V1__MemoryTypeCount, 6);
  Engram__V1__MemoryTypeCount **ptrs = EG_ARENA_ARRAY(r->arena, Engram__V1__MemoryTypeCount *, 6);
  if (!out || !rows || !ptrs) return EG_ENOMEM;
  engram__v1__get_user_stats_response__init(out);
  out->user_id = in->user_id;
  out->sessions = (int64_t)sessions;
  out->active_memories = (int64_t)s.by_state[1];
  out->duplicate_memories = (int64_t)s.by_state[2];
  out->deleted_memories = (int64_t)s.by_state[3];
  out->superseded_memories = (int64_t)s.by_state[4];
  out->expired_memories = (int64_t)s.expired;
  out->embedding_dimension = (int32_t)c.dim;
  out->memory_quota = r->srv->cfg->memory_quota;
  out->by_type = ptrs;
  for (int t = 1; t <= 6; t++) {
    const uint64_t *n = s.by_type[t];
    if (!n[1] && !n[2] && !n[3] && !n[4]) continue;
    Engram__V1__MemoryTypeCount *row = &rows[out->n_by_type];
    engram__v1__memory_type_count__init(row);
    row->type = t;
    row->active = (int64_t)n[1];
    row->duplicate = (int64_t)n[2];
    row->deleted = (int64_t)n[3];
    row->superseded = (int64_t)n[4];
    ptrs[out->n_by_type++] = row;
  }
  r->resp = &out->base;
  return EG_OK;
}

/* ==== the table ================================================================ */

const eg_method eg_user_methods[] = {
    {.path = "/engram.v1.UserService/DeleteUser",
     .in = &engram__v1__delete_user_request__descriptor,
     .role = EG_ROLE_AGENT,
     .prepare = eg_du_prepare,
     .apply = eg_du_apply},
    {.path = "/engram.v1.UserService/GetUserStats",
     .in = &engram__v1__get_user_stats_request__descriptor,
     .role = EG_ROLE_AGENT,
     .read = eg_user_stats},
    {.path = NULL},
};
