/*
 * engram.v1.UserService: erasure of everything a user has in the caller's
 * tenant, and per-user statistics.
 *
 * DeleteUser destroys the user's data keys first (crypto-shredding: see
 * eg_du_prepare), then is one call but many write transactions: each apply erases at
 * most --erase-batch keys and sets r->more, so the transport hands the call
 * back to the writer (behind whatever else is queued) until the user is
 * gone. The progress (and the counts) live in the store, so an apply that
 * is rolled back and replayed never counts twice.
 *
 * ExportUser is a stream on a thread of its own: one read txn (a reader
 * of its own) for the whole export, so it is consistent at one LSN. That
 * snapshot blocks the map's growth and LMDB's reuse of the pages freed
 * after it, so its life is bounded twice: each send by
 * --export-send-timeout-ms (a client that stops reading), the whole export
 * by --export-max-ms (a client that reads slowly).
 */
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "engram/v1/user.pb-c.h"
#include "server/convert.h"
#include "server/data_keys.h"
#include "server/memory_svc.h"
#include "server/service.h"
#include "server/session_svc.h"
#include "server/validate.h"

/* ==== DeleteUser ============================================================== */

/* The user's data keys are destroyed here, in prepare, before the first
 * erase step commits: a durable key-store commit of its own (not in the
 * WAL: server/data_keys.h), done on the worker, not the writer. From then
 * on every copy of the user's ciphertext (the records still to be erased,
 * free pages, backups, archived segments, replicas' old disks) reads as
 * ERASED. A crash between this and the last erase step leaves records
 * that no longer open (ERASED, never plaintext); the client's retry finds
 * no key left to destroy and finishes erasing them. The other order would
 * leave, after a crash, records erased but their key alive in every older
 * copy. Writes of the user already sealed under these keys are not
 * ordered with this: each one's apply checks its keys are still live
 * (server/convert.h, eg_field_sealed_live) and answers ABORTED if not; one
 * that passed runs on the writer before this call's first erase step,
 * which erases its record. */
static eg_err eg_du_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__DeleteUserRequest *in = (const void *)msg;
  uint64_t destroyed = 0;
  r->state = (void *)in->user_id;
  eg_err e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg);
  /* Under way until the call is freed, after its last step's answer: no
   * rotation gives the user a key meanwhile (server/data_keys.h). */
  if (e == EG_OK)
    e = eg_data_keys_erasure_hold(r->srv->data_keys, r->arena, r->tenant, in->user_id);
  if (e == EG_OK &&
      (e = eg_data_keys_erase_user(r->srv->data_keys, r->tenant, in->user_id, &destroyed)))
    snprintf(r->msg, sizeof r->msg, "user_id: the data keys of '%s' could not be destroyed: %s",
             in->user_id, eg_err_msg(e));
  return e;
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

/* ==== ExportUser ============================================================== */

/* ExportUser calls running now, at most --max-exports: each holds a reader
 * (its slot is counted in eg_config_store_readers) and a read snapshot. */
static int eg_exports_max(const eg_srv *srv) { return srv->cfg->max_exports; }

static eg_stream_places eg_export_places = {
    .max = eg_exports_max, .what = "exports running", .limit = "--max-exports"};

struct eg_export {
  const eg_srv *srv;
  const char *tenant, *user_id;
  eg_stream_out out;
  eg_txn *t;
  uint64_t lsn;   /* the snapshot's: every response carries it */
  int64_t now_us; /* taken once: a session's EXPIRED state is as of then */
  eg_err err;     /* what stopped a scan's visitor */
  char *msg;
  size_t msglen;
};

/* A request context for one response: what a conversion builds (and
 * decrypts) lives in its arena, wiped and freed once the response went. */
static eg_err eg_export_req(struct eg_export *x, eg_req *r) {
  *r = (eg_req){.srv = x->srv, .tenant = x->tenant, .now_us = x->now_us};
  return (r->arena = eg_arena_new()) ? EG_OK : EG_ENOMEM;
}

/* Sends resp (when e is EG_OK) stamped with the export's LSN, then frees
 * r's arena. Returns how it went; a conversion's message moves to x->msg. */
static eg_err eg_export_send(struct eg_export *x, eg_req *r, eg_err e,
                             Engram__V1__ExportUserResponse *resp) {
  if (e == EG_OK) {
    resp->lsn = x->lsn;
    e = eg_stream_send(&x->out, &resp->base, x->msg, x->msglen);
  } else if (r->msg[0]) {
    snprintf(x->msg, x->msglen, "%s", r->msg);
  }
  eg_arena_free(r->arena);
  return e;
}

/* The session, then its messages in seq order, in batches of at most
 * --max-page-size messages and --max-reply-bytes. */
static eg_err eg_export_session(struct eg_export *x, const eg_session_rec *rec) {
  Engram__V1__ExportUserResponse resp = ENGRAM__V1__EXPORT_USER_RESPONSE__INIT;
  eg_req r;
  eg_err e = eg_export_req(x, &r);
  if (e != EG_OK) return e;
  resp.item_case = ENGRAM__V1__EXPORT_USER_RESPONSE__ITEM_SESSION;
  e = eg_export_send(x, &r, eg_session_to_api(&r, rec, &resp.session), &resp);
  for (uint64_t start = 1; e == EG_OK;) {
    Engram__V1__ExportedMessages batch = ENGRAM__V1__EXPORTED_MESSAGES__INIT;
    eg_message_page page = {0};
    if ((e = eg_export_req(x, &r)) != EG_OK) return e;
    e = eg_messages_page(&r, x->t, rec, start, 0, (size_t)x->srv->cfg->max_page_size,
                         &page);
    if (e == EG_OK && page.n == 0) {
      eg_arena_free(r.arena);
      break;
    }
    batch.session_id = rec->session_id;
    batch.messages = page.msgs;
    batch.n_messages = page.n;
    resp.item_case = ENGRAM__V1__EXPORT_USER_RESPONSE__ITEM_MESSAGES;
    resp.messages = &batch;
    e = eg_export_send(x, &r, e, &resp);
    if (!page.more) break;
    start = page.next_seq;
  }
  return e;
}

static int eg_export_session_visit(void *arg, eg_session_rec *rec, const eg_session_cursor *cur) {
  struct eg_export *x = arg;
  x->err = eg_export_session(x, rec);
  eg_session_rec_free(rec);
  return x->err != EG_OK;
}

/* A memory in any state, expired or not (everything stored of the user),
 * as GetMemory shows it, embedding included. */
static int eg_export_memory_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m,
                                  const uint8_t *vec) {
  struct eg_export *x = arg;
  Engram__V1__ExportUserResponse resp = ENGRAM__V1__EXPORT_USER_RESPONSE__INIT;
  eg_memory_rec *rec;
  const char *id;
  size_t id_len;
  int64_t create_us;
  eg_req r;
  if ((x->err = eg_export_req(x, &r)) != EG_OK) return 1;
  eg_memory_pos_split(pos, &create_us, &id, &id_len);
  char *mid = eg_arena_strndup(r.arena, id, id_len);
  eg_err e = mid ? eg_memory_load(&r, x->t, mid, 1, &rec) : EG_ENOMEM;
  if (e == EG_OK) e = eg_memory_to_api(&r, x->t, rec, 1, &resp.memory);
  resp.item_case = ENGRAM__V1__EXPORT_USER_RESPONSE__ITEM_MEMORY;
  x->err = eg_export_send(x, &r, e, &resp);
  return x->err != EG_OK;
}

/* The export itself (its place among --max-exports is taken). */
static eg_err eg_export_run(struct eg_export *x) {
  eg_err e = eg_store_reader_new(x->srv->store, &x->t);
  if (e == EG_OK && (e = eg_store_reader_begin(x->t)) == EG_OK) {
    e = eg_store_txn_lsn(x->t, &x->lsn);
    if (e == EG_OK)
      e = eg_store_sessions_scan(x->t, x->tenant, x->user_id, NULL, eg_export_session_visit, x);
    if (e == EG_OK && (e = x->err) == EG_OK)
      e = eg_store_memories_scan(x->t, x->tenant, x->user_id, NULL, 0, 0, eg_export_memory_visit,
                                 x);
    if (e == EG_OK) e = x->err;
    eg_store_reader_end(x->t);
  } else if (e != EG_OK) {
    snprintf(x->msg, x->msglen, "cannot open the export's read snapshot: %s", eg_err_msg(e));
  }
  eg_store_reader_free(x->t);
  return e;
}

static eg_err eg_export_user(const eg_srv *srv, const char *tenant, struct grpc_call *call,
                             struct grpc_completion_queue *cq, char *msg, size_t msglen) {
  ProtobufCMessage *in = NULL;
  eg_err e = eg_stream_recv_request(srv, call, cq, &engram__v1__export_user_request__descriptor,
                                    &in, msg, msglen);
  if (e != EG_OK) return e;
  struct eg_export x = {.srv = srv, .tenant = tenant,
                        .out = {.call = call, .cq = cq,
                                .send_ms = srv->cfg->export_send_timeout_ms,
                                .send_limit = "--export-send-timeout-ms",
                                .max_ms = srv->cfg->export_max_ms,
                                .max_limit = "--export-max-ms"},
                        .user_id = ((Engram__V1__ExportUserRequest *)in)->user_id,
                        .now_us = eg_now_us(), .msg = msg, .msglen = msglen};
  eg_stream_out_start(&x.out);
  e = eg_validate_id("user_id", x.user_id, 1, msg, msglen);
  if (e == EG_OK) e = eg_export_run(&x);
  protobuf_c_message_free_unpacked(in, NULL);
  return e;
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
    {.path = "/engram.v1.UserService/ExportUser",
     .in = &engram__v1__export_user_request__descriptor,
     .role = EG_ROLE_AGENT,
     .stream = eg_export_user,
     .places = &eg_export_places},
    {.path = NULL},
};
