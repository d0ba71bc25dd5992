/*
 * engram.v1.CheckpointService (proto/engram/v1/agent_state.proto): a
 * graph's checkpoints per user thread, with their pending writes
 * (LangGraph's checkpointer). Storage: storage/checkpoints.h.
 *
 * Writes are prepare (worker: every check, the metadata's blind terms,
 * sealing) + apply (writer: the puts). Every sealed field's context names
 * the user, thread, namespace and checkpoint (and a write's task and idx),
 * so a ciphertext moved to another record does not open.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/storage/v1/checkpoint_records.pb-c.h"
#include "engram/v1/agent_state.pb-c.h"
#include "server/blind_key.h"
#include "server/convert.h"
#include "server/json_terms.h"
#include "server/memory_svc.h"
#include "server/page_token.h"
#include "server/service.h"
#include "server/validate.h"

/* Ids of the API: thread_id, checkpoint_ns, checkpoint_id, parent, task_id.
 * LangGraph's namespaces hold '|' and ':', so any UTF-8 goes (the wire
 * check already refused NUL and bad UTF-8); only the length is bounded. */
#define EG_CKPT_ID_MAX 128
/* checkpoint_type, channel, value_type: a serializer's tag or a channel
 * name. */
#define EG_CKPT_NAME_MAX 256
/* task_path: LangGraph's path of a task, a few joined parts. */
#define EG_CKPT_TASK_PATH_MAX 1024
/* ListCheckpoints: default and cap of page_size; and at most this many
 * times the page size checkpoints examined per call (a filter that
 * matches few must not make one call decode all of a user's checkpoints:
 * the page comes back short, or empty, with a token to go on). */
#define EG_CKPT_PAGE_MAX 100
#define EG_CKPT_EXAMINE_FACTOR 10

/* ==== checks and sealing ========================================================= */

/* value: at most EG_CKPT_ID_MAX bytes, non-empty unless empty_ok. */
static eg_err eg_ck_id(eg_req *r, const char *field, const char *value, int empty_ok) {
  size_t n = strlen(value);
  if (n == 0 && !empty_ok) return eg_mem_invalid(r, field, "required (non-empty)");
  if (n > EG_CKPT_ID_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu bytes, limit %d", n, (int)EG_CKPT_ID_MAX);
  return EG_OK;
}

static eg_err eg_ck_len(eg_req *r, const char *field, size_t n, size_t max) {
  if (n > max) return eg_invalid(r->msg, sizeof r->msg, field, "%zu bytes, limit %zu", n, max);
  return EG_OK;
}

/* ==== a checkpoint as the API shows it ============================================ */

/* Opens a field of a checkpoint of user (under its data key). */
static eg_err eg_ck_bytes(eg_req *r, const char *user, const char *rid, const char *field,
                          const ProtobufCBinaryData *tok, ProtobufCBinaryData *out) {
  char *pt;
  size_t len;
  eg_err e = eg_field_open(r, user, "checkpoint", rid, field, tok, &pt, &len);
  if (e) return e;
  out->data = (uint8_t *)pt;
  out->len = len;
  return EG_OK;
}

/* A checkpoint's pending writes as storage returns them: the array and
 * its count, kept together for the deferred free. */
struct eg_ck_writes {
  eg_ckpt_write_rec **w;
  size_t n;
};

static void eg_ck_writes_free(void *p) {
  struct eg_ck_writes *h = p;
  eg_ckpt_writes_free(h->w, h->n);
}

/* The pending writes of checkpoint (thread, ns, id) into c. */
static eg_err eg_ck_pending(eg_req *r, const char *user, Engram__V1__Checkpoint *c) {
  struct eg_ck_writes *h = EG_ARENA_NEW(r->arena, struct eg_ck_writes);
  if (!h) return EG_ENOMEM;
  eg_err e = eg_store_checkpoint_writes_get(r->rtxn, r->tenant, user, c->thread_id, c->checkpoint_ns,
                                            c->checkpoint_id, EG_CKPT_PENDING_MAX, &h->w, &h->n);
  /* PutWrites keeps a checkpoint within the bound: more is damage. */
  if (e == EG_ELIMIT) {
    snprintf(r->msg, sizeof r->msg, "checkpoint %s has more than %d pending writes",
             c->checkpoint_id, EG_CKPT_PENDING_MAX);
    return EG_ECORRUPT;
  }
  if (e) return e;
  if (eg_arena_defer(r->arena, eg_ck_writes_free, h) != 0) {
    eg_ckpt_writes_free(h->w, h->n);
    return EG_ENOMEM;
  }
  if (!h->n) return EG_OK;
  c->pending_writes = EG_ARENA_ARRAY(r->arena, Engram__V1__PendingWrite *, h->n);
  if (!c->pending_writes) return EG_ENOMEM;
  for (size_t i = 0; i < h->n; i++) {
    const eg_ckpt_write_rec *w = h->w[i];
    Engram__V1__PendingWrite *pw = EG_ARENA_NEW(r->arena, Engram__V1__PendingWrite);
    const char *rid = eg_ck_record_id(r, user, c->thread_id, c->checkpoint_ns, c->checkpoint_id,
                                      w->task_id, w->idx, 1);
    if (!pw || !rid) return EG_ENOMEM;
    engram__v1__pending_write__init(pw);
    pw->task_id = w->task_id;
    pw->idx = w->idx;
    pw->channel = w->channel;
    pw->value_type = w->value_type;
    pw->task_path = w->task_path;
    if ((e = eg_ck_bytes(r, user, rid, "value", &w->value_token, &pw->value))) return e;
    c->pending_writes[c->n_pending_writes++] = pw;
  }
  return EG_OK;
}

static void eg_ck_rec_free(void *p) { eg_ckpt_rec_free(p); }

/* rec (which the call now owns) as the API shows it, with its pending
 * writes, into *out. */
static eg_err eg_ck_to_api(eg_req *r, const char *user, eg_ckpt_rec *rec, Engram__V1__Checkpoint **out) {
  if (eg_arena_defer(r->arena, eg_ck_rec_free, rec) != 0) {
    eg_ckpt_rec_free(rec);
    return EG_ENOMEM;
  }
  Engram__V1__Checkpoint *c = EG_ARENA_NEW(r->arena, Engram__V1__Checkpoint);
  const char *rid = eg_ck_record_id(r, user, rec->thread_id, rec->checkpoint_ns, rec->checkpoint_id,
                                    NULL, 0, 0);
  size_t len;
  if (!c || !rid) return EG_ENOMEM;
  engram__v1__checkpoint__init(c);
  c->thread_id = rec->thread_id;
  c->checkpoint_ns = rec->checkpoint_ns;
  c->checkpoint_id = rec->checkpoint_id;
  c->parent_checkpoint_id = rec->parent_checkpoint_id;
  c->checkpoint_type = rec->checkpoint_type;
  c->user_id = (char *)user;
  if (!(c->create_time = eg_timestamp(r, rec->create_time_us))) return EG_ENOMEM;
  eg_err e = eg_ck_bytes(r, user, rid, "checkpoint", &rec->checkpoint_token, &c->checkpoint);
  if (!e)
    e = eg_field_open(r, user, "checkpoint", rid, "metadata", &rec->metadata_token,
                      &c->metadata_json, &len);
  if (!e)
    e = eg_field_open(r, user, "checkpoint", rid, "new_versions", &rec->new_versions_token,
                      &c->new_versions_json, &len);
  if (!e) e = eg_ck_pending(r, user, c);
  if (!e) *out = c;
  return e;
}

/* ==== PutCheckpoint =============================================================== */

struct eg_pc_state {
  const char *user_id;
  eg_ckpt_rec rec;
};

/* A JSON object field of at most EG_CKPT_JSON_MAX bytes and
 * EG_CKPT_JSON_PAIRS_MAX keys; its blind terms into terms (may be NULL). */
static eg_err eg_ck_json(eg_req *r, const eg_blind_ctx *ctx, const char *field, const char *json,
                         uint64_t **terms, size_t *n) {
  size_t len = strlen(json), cnt;
  eg_err e = eg_ck_len(r, field, len, EG_CKPT_JSON_MAX);
  uint64_t *t = EG_ARENA_ARRAY(r->arena, uint64_t, EG_CKPT_JSON_PAIRS_MAX);
  if (e) return e;
  if (!t) return EG_ENOMEM;
  e = eg_json_terms(ctx, field, json, len, t, EG_CKPT_JSON_PAIRS_MAX, &cnt, r->msg, sizeof r->msg);
  if (!e && terms) {
    *terms = t;
    *n = cnt;
  }
  return e;
}

static eg_err eg_pc_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__PutCheckpointRequest *in = (const void *)msg;
  const Engram__V1__Checkpoint *c = in->checkpoint;
  struct eg_pc_state *st = EG_ARENA_NEW(r->arena, struct eg_pc_state);
  eg_blind_ctx *ctx;
  eg_err e;
  if (!st) return EG_ENOMEM;
  if (!c) return eg_mem_invalid(r, "checkpoint", "required");
  if ((e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_ck_id(r, "checkpoint.thread_id", c->thread_id, 0)) ||
      (e = eg_ck_id(r, "checkpoint.checkpoint_ns", c->checkpoint_ns, 1)) ||
      (e = eg_ck_id(r, "checkpoint.checkpoint_id", c->checkpoint_id, 0)) ||
      (e = eg_ck_id(r, "checkpoint.parent_checkpoint_id", c->parent_checkpoint_id, 1)) ||
      (e = eg_ck_len(r, "checkpoint.checkpoint_type", strlen(c->checkpoint_type), EG_CKPT_NAME_MAX)) ||
      (e = eg_ck_len(r, "checkpoint.checkpoint", c->checkpoint.len,
                     (size_t)r->srv->cfg->max_checkpoint_bytes)) ||
      (e = eg_blind_ctx_of(r, &ctx)))
    return e;
  eg_ckpt_rec *rec = &st->rec;
  engram__storage__v1__checkpoint_record__init(rec);
  rec->blind_key_id = r->blind_key_used;
  if ((e = eg_ck_json(r, ctx, "checkpoint.metadata_json", c->metadata_json, &rec->metadata_hashes,
                      &rec->n_metadata_hashes)) ||
      (e = eg_ck_json(r, ctx, "checkpoint.new_versions_json", c->new_versions_json, NULL, NULL)))
    return e;
  st->user_id = in->user_id;
  rec->thread_id = c->thread_id;
  rec->checkpoint_ns = c->checkpoint_ns;
  rec->checkpoint_id = c->checkpoint_id;
  rec->parent_checkpoint_id = c->parent_checkpoint_id;
  rec->checkpoint_type = c->checkpoint_type;
  rec->create_time_us = r->now_us;
  const char *rid = eg_ck_record_id(r, in->user_id, c->thread_id, c->checkpoint_ns, c->checkpoint_id,
                                    NULL, 0, 0);
  if (!rid) return EG_ENOMEM;
  if ((e = eg_field_seal(r, in->user_id, "checkpoint", rid, "checkpoint", c->checkpoint.data,
                         c->checkpoint.len, &rec->checkpoint_token)) ||
      (e = eg_field_seal(r, in->user_id, "checkpoint", rid, "metadata", c->metadata_json,
                         strlen(c->metadata_json), &rec->metadata_token)) ||
      (e = eg_field_seal(r, in->user_id, "checkpoint", rid, "new_versions", c->new_versions_json,
                         strlen(c->new_versions_json), &rec->new_versions_token)))
    return e;
  r->state = st;
  return EG_OK;
}

static eg_err eg_pc_apply(eg_req *r, eg_txn *t) {
  const struct eg_pc_state *st = r->state;
  const eg_ckpt_rec *rec = &st->rec;
  const char *id = rec->checkpoint_id;
  eg_err e;
  if ((e = eg_field_sealed_live(r, st->user_id, "checkpoint", id, &rec->checkpoint_token)) ||
      (e = eg_field_sealed_live(r, st->user_id, "checkpoint", id, &rec->metadata_token)) ||
      (e = eg_field_sealed_live(r, st->user_id, "checkpoint", id, &rec->new_versions_token)) ||
      (e = eg_store_checkpoint_put(t, r->tenant, st->user_id, rec)))
    return e;
  Engram__V1__PutCheckpointResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__PutCheckpointResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__put_checkpoint_response__init(out);
  out->thread_id = st->rec.thread_id;
  out->checkpoint_ns = st->rec.checkpoint_ns;
  out->checkpoint_id = st->rec.checkpoint_id;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== GetCheckpoint =============================================================== */

static eg_err eg_get_checkpoint(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__GetCheckpointRequest *in = (const void *)msg;
  eg_ckpt_rec *rec;
  eg_err e;
  if ((e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_ck_id(r, "thread_id", in->thread_id, 0)) ||
      (e = eg_ck_id(r, "checkpoint_ns", in->checkpoint_ns, 1)) ||
      (e = eg_ck_id(r, "checkpoint_id", in->checkpoint_id, 1)))
    return e;
  e = eg_store_checkpoint_get(r->rtxn, r->tenant, in->user_id, in->thread_id, in->checkpoint_ns,
                              in->checkpoint_id, &rec);
  if (e == EG_ENOTFOUND) {
    if (in->checkpoint_id[0])
      snprintf(r->msg, sizeof r->msg, "checkpoint_id: no checkpoint '%s' in thread '%s' namespace '%s'",
               in->checkpoint_id, in->thread_id, in->checkpoint_ns);
    else
      snprintf(r->msg, sizeof r->msg, "thread_id: thread '%s' has no checkpoint in namespace '%s'",
               in->thread_id, in->checkpoint_ns);
    return e;
  }
  Engram__V1__Checkpoint *c;
  if (e || (e = eg_ck_to_api(r, in->user_id, rec, &c))) return e;
  r->resp = &c->base;
  return EG_OK;
}

/* ==== ListCheckpoints ============================================================= */

struct eg_list_ck {
  eg_req *r;
  const Engram__V1__ListCheckpointsRequest *in;
  const char *ns;         /* only this namespace (with no thread: any thread's); NULL: any */
  /* The sorted blind terms every match holds, under each read key
   * (server/blind_key.h); a checkpoint is compared with its own key's. */
  const eg_blind_read *keys;
  uint64_t *filter[2];
  size_t n_filter, want, examined;
  Engram__V1__ListCheckpointsResponse *out;
  eg_reply_budget budget;
  eg_ckpt_pos last; /* of the last checkpoint shown or passed over */
  int more;
  eg_err err;
};

static int eg_has_term(const eg_ckpt_rec *rec, uint64_t term) {
  size_t lo = 0, hi = rec->n_metadata_hashes;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (rec->metadata_hashes[mid] == term) return 1;
    if (rec->metadata_hashes[mid] < term) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

static int eg_list_ck_visit(void *arg, const eg_ckpt_pos *pos, eg_ckpt_rec *rec) {
  struct eg_list_ck *l = arg;
  if (l->examined == EG_CKPT_EXAMINE_FACTOR * l->want) {
    eg_ckpt_rec_free(rec);
    return l->more = 1;
  }
  l->examined++;
  int match = !l->ns || strcmp(rec->checkpoint_ns, l->ns) == 0;
  unsigned k = eg_blind_read_pick(l->keys, rec->blind_key_id);
  if (l->n_filter && k >= l->keys->n) match = 0; /* under neither key: not expected */
  for (size_t i = 0; match && i < l->n_filter; i++) match = eg_has_term(rec, l->filter[k][i]);
  if (!match || l->out->n_checkpoints == l->want) {
    eg_ckpt_rec_free(rec);
    /* A full page stops at the next match, which the next page shows. */
    if (match) return l->more = 1;
    l->last = *pos;
    return 0;
  }
  Engram__V1__Checkpoint *c;
  if ((l->err = eg_ck_to_api(l->r, l->in->user_id, rec, &c))) return 1;
  /* Past the reply budget the page ends early; the token resumes here. */
  if (!eg_reply_budget_take(&l->budget, &c->base)) return l->more = 1;
  l->out->checkpoints[l->out->n_checkpoints++] = c;
  l->last = *pos;
  return 0;
}

static eg_err eg_list_checkpoints(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__ListCheckpointsRequest *in = (const void *)msg;
  int has_ns = in->ns_case == ENGRAM__V1__LIST_CHECKPOINTS_REQUEST__NS_CHECKPOINT_NS;
  struct eg_list_ck l = {.r = r, .in = in, .ns = has_ns ? in->checkpoint_ns : NULL};
  eg_ckpt_pos after;
  eg_blind_read keys;
  eg_err e;
  if ((e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_ck_id(r, "thread_id", in->thread_id, 1)) ||
      (has_ns && (e = eg_ck_id(r, "checkpoint_ns", in->checkpoint_ns, 1))) ||
      (e = eg_ck_id(r, "before_checkpoint_id", in->before_checkpoint_id, 1)) ||
      (e = eg_blind_read_ctxs(r, r->rtxn, &keys)))
    return e;
  for (unsigned k = 0; k < keys.n; k++)
    if ((e = eg_ck_json(r, keys.ctx[k], "filter_json", in->filter_json, &l.filter[k], &l.n_filter)))
      return e;
  l.keys = &keys;
  if (in->page_size < 0) return eg_mem_invalid(r, "page_size", "must not be negative");
  l.want = in->page_size == 0 || in->page_size > EG_CKPT_PAGE_MAX ? EG_CKPT_PAGE_MAX : (size_t)in->page_size;
  _Static_assert(sizeof after.buf <= EG_PAGE_POS_MAX, "a checkpoint listing's position fits a page token");
  if (in->page_token[0] &&
      (e = eg_page_token_open(r, &in->base, after.buf, sizeof after.buf, &after.len)))
    return e;
  if (!(l.out = EG_ARENA_NEW(r->arena, Engram__V1__ListCheckpointsResponse))) return EG_ENOMEM;
  engram__v1__list_checkpoints_response__init(l.out);
  if (!(l.out->checkpoints = EG_ARENA_ARRAY(r->arena, Engram__V1__Checkpoint *, l.want))) return EG_ENOMEM;
  eg_reply_budget_init(&l.budget, r);
  /* One thread's namespace is its own range; a thread's every namespace
   * and a user's every thread are index ranges (storage/checkpoints.h). */
  e = eg_store_checkpoints_scan(r->rtxn, r->tenant, in->user_id, in->thread_id,
                                in->thread_id[0] ? l.ns : NULL, in->before_checkpoint_id,
                                in->page_token[0] ? &after : NULL, eg_list_ck_visit, &l);
  if (e == EG_EINVAL && in->page_token[0])
    return eg_mem_invalid(r, "page_token", "not a token this server issued for this listing");
  if (e || (e = l.err)) return e;
  if (l.more && l.last.len > 0 &&
      (e = eg_page_token_seal(r, &in->base, l.last.buf, l.last.len, &l.out->next_page_token)))
    return e;
  r->resp = &l.out->base;
  return EG_OK;
}

/* ==== PutWrites =================================================================== */

struct eg_pw_state {
  const Engram__V1__PutWritesRequest *in;
  eg_ckpt_write_rec *recs;
};

static eg_err eg_pw_check(eg_req *r, const Engram__V1__PutWritesRequest *in) {
  char field[64];
  size_t total = 0;
  eg_err e;
  if ((e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_ck_id(r, "thread_id", in->thread_id, 0)) ||
      (e = eg_ck_id(r, "checkpoint_ns", in->checkpoint_ns, 1)) ||
      (e = eg_ck_id(r, "checkpoint_id", in->checkpoint_id, 0)))
    return e;
  /* The wire check bounds the count already; this keeps the function
   * safe on its own. */
  if (in->n_writes > EG_CKPT_WRITES_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "writes", "%zu writes, limit %d", in->n_writes,
                      EG_CKPT_WRITES_MAX);
  for (size_t i = 0; i < in->n_writes; i++) {
    const Engram__V1__PendingWrite *w = in->writes[i];
    size_t ch = strlen(w->channel), vt = strlen(w->value_type), tp = strlen(w->task_path);
#define EG_PW_FIELD(name) (snprintf(field, sizeof field, "writes[%zu]." name, i), field)
    if ((e = eg_ck_id(r, EG_PW_FIELD("task_id"), w->task_id, 0))) return e;
    if (ch == 0) return eg_mem_invalid(r, EG_PW_FIELD("channel"), "required (non-empty)");
    if ((e = eg_ck_len(r, EG_PW_FIELD("channel"), ch, EG_CKPT_NAME_MAX)) ||
        (e = eg_ck_len(r, EG_PW_FIELD("value_type"), vt, EG_CKPT_NAME_MAX)) ||
        (e = eg_ck_len(r, EG_PW_FIELD("task_path"), tp, EG_CKPT_TASK_PATH_MAX)) ||
        (e = eg_ck_len(r, EG_PW_FIELD("value"), w->value.len, EG_CKPT_VALUE_MAX)))
      return e;
#undef EG_PW_FIELD
    total += w->value.len + strlen(w->task_id) + ch + vt + tp;
  }
  if (total > EG_CKPT_WRITES_BYTES_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "writes", "%zu bytes in all, limit %d", total,
                      EG_CKPT_WRITES_BYTES_MAX);
  return EG_OK;
}

static eg_err eg_pw_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__PutWritesRequest *in = (const void *)msg;
  struct eg_pw_state *st = EG_ARENA_NEW(r->arena, struct eg_pw_state);
  eg_err e;
  if (!st) return EG_ENOMEM;
  if ((e = eg_pw_check(r, in))) return e;
  st->in = in;
  st->recs = EG_ARENA_ARRAY(r->arena, eg_ckpt_write_rec, in->n_writes ? in->n_writes : 1);
  if (!st->recs) return EG_ENOMEM;
  for (size_t i = 0; i < in->n_writes; i++) {
    const Engram__V1__PendingWrite *w = in->writes[i];
    eg_ckpt_write_rec *rec = &st->recs[i];
    engram__storage__v1__checkpoint_write_record__init(rec);
    rec->task_id = w->task_id;
    rec->idx = w->idx;
    rec->channel = w->channel;
    rec->value_type = w->value_type;
    rec->task_path = w->task_path;
    const char *rid = eg_ck_record_id(r, in->user_id, in->thread_id, in->checkpoint_ns,
                                      in->checkpoint_id, w->task_id, w->idx, 1);
    if (!rid) return EG_ENOMEM;
    if ((e = eg_field_seal(r, in->user_id, "checkpoint", rid, "value", w->value.data,
                           w->value.len, &rec->value_token)))
      return e;
  }
  r->state = st;
  return EG_OK;
}

static eg_err eg_pw_apply(eg_req *r, eg_txn *t) {
  const struct eg_pw_state *st = r->state;
  const Engram__V1__PutWritesRequest *in = st->in;
  int32_t written = 0;
  size_t held;
  uint64_t bytes;
  eg_err e = EG_OK;
  for (size_t i = 0; i < in->n_writes && !e; i++)
    e = eg_field_sealed_live(r, in->user_id, "checkpoint", in->checkpoint_id,
                             &st->recs[i].value_token);
  for (size_t i = 0; i < in->n_writes && !e; i++) {
    int w;
    e = eg_store_checkpoint_write_put(t, r->tenant, in->user_id, in->thread_id, in->checkpoint_ns,
                                      in->checkpoint_id, &st->recs[i], &w);
    written += w;
  }
  if (e) return e;
  /* Reads return a checkpoint with all its writes: bound what it holds
   * once this call's writes are in (so that a retry, which writes nothing
   * new, is never refused; a refusal aborts this call's txn, writing
   * nothing). The walk is bounded by the count. */
  e = eg_store_checkpoint_writes_size(t, r->tenant, in->user_id, in->thread_id, in->checkpoint_ns,
                                      in->checkpoint_id, EG_CKPT_PENDING_MAX, &held, &bytes);
  if (e == EG_ELIMIT) {
    snprintf(r->msg, sizeof r->msg,
             "writes: checkpoint %s would hold more than %d pending writes (the limit)",
             in->checkpoint_id, EG_CKPT_PENDING_MAX);
    return EG_EQUOTA;
  }
  if (e) return e;
  if (bytes > EG_CKPT_PENDING_BYTES_MAX) {
    snprintf(r->msg, sizeof r->msg,
             "writes: checkpoint %s would hold %llu bytes of pending writes as stored, limit %d",
             in->checkpoint_id, (unsigned long long)bytes, EG_CKPT_PENDING_BYTES_MAX);
    return EG_EQUOTA;
  }
  Engram__V1__PutWritesResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__PutWritesResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__put_writes_response__init(out);
  out->written = written;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== DeleteThread ================================================================ */

/* What the deletion did in the committed steps (done), and what the last
 * apply did, adopted only once an LSN was committed after it (an apply
 * replayed after the map grew must not count twice): the pattern of
 * DeduplicateMemories' progress (svc_memory.c). */
struct eg_dt_counts {
  uint64_t checkpoints, writes;
};

struct eg_dt_state {
  const char *user_id, *thread_id;
  struct eg_dt_counts done, pending;
  uint64_t pending_lsn;
  int has_pending;
};

static eg_err eg_dt_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__DeleteThreadRequest *in = (const void *)msg;
  struct eg_dt_state *st = EG_ARENA_NEW(r->arena, struct eg_dt_state);
  eg_err e;
  if (!st) return EG_ENOMEM;
  if ((e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_ck_id(r, "thread_id", in->thread_id, 0)))
    return e;
  st->user_id = in->user_id;
  st->thread_id = in->thread_id;
  r->state = st;
  return EG_OK;
}

static eg_err eg_dt_apply(eg_req *r, eg_txn *t) {
  /* The one state an apply changes: see struct eg_dt_state. */
  struct eg_dt_state *st = r->state;
  uint64_t lsn = eg_store_last_lsn(r->srv->store);
  if (st->has_pending && lsn > st->pending_lsn) st->done = st->pending;
  st->has_pending = 0;
  struct eg_dt_counts c = st->done;
  int done = 0;
  eg_err e = eg_store_thread_delete_step(t, r->tenant, st->user_id, st->thread_id,
                                         (uint64_t)r->srv->cfg->erase_batch, &c.checkpoints,
                                         &c.writes, &done);
  if (e) return e;
  if (!done) {
    st->pending = c;
    st->pending_lsn = lsn;
    st->has_pending = 1;
    r->more = 1;
    snprintf(r->msg, sizeof r->msg, "deleted %llu checkpoints and %llu writes so far",
             (unsigned long long)c.checkpoints, (unsigned long long)c.writes);
    return EG_OK;
  }
  Engram__V1__DeleteThreadResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__DeleteThreadResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__delete_thread_response__init(out);
  out->checkpoints_deleted = (int64_t)c.checkpoints;
  out->writes_deleted = (int64_t)c.writes;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== the table ==================================================================== */

#define EG_CKPT_PATH(name) "/engram.v1.CheckpointService/" #name
#define EG_READ(name, req, fn) \
  {.path = EG_CKPT_PATH(name), .in = &req, .role = EG_ROLE_AGENT, .read = fn}
#define EG_WRITE(name, req, prep, app) \
  {.path = EG_CKPT_PATH(name), .in = &req, .role = EG_ROLE_AGENT, .prepare = prep, .apply = app}

const eg_method eg_checkpoint_methods[] = {
    EG_WRITE(PutCheckpoint, engram__v1__put_checkpoint_request__descriptor, eg_pc_prepare, eg_pc_apply),
    EG_READ(GetCheckpoint, engram__v1__get_checkpoint_request__descriptor, eg_get_checkpoint),
    EG_READ(ListCheckpoints, engram__v1__list_checkpoints_request__descriptor, eg_list_checkpoints),
    EG_WRITE(PutWrites, engram__v1__put_writes_request__descriptor, eg_pw_prepare, eg_pw_apply),
    EG_WRITE(DeleteThread, engram__v1__delete_thread_request__descriptor, eg_dt_prepare, eg_dt_apply),
    {.path = NULL},
};
