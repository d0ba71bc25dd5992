/*
 * engram.v1.SessionService: sessions, messages, context and summaries.
 * Reads run on the worker; writes are prepare (worker) + apply (writer).
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "engram/v1/session.pb-c.h"
#include "server/convert.h"
#include "server/ids.h"
#include "server/memory_svc.h"
#include "server/message_terms.h"
#include "server/page_token.h"
#include "server/session_svc.h"
#include "server/session_terms.h"
#include "server/service.h"
#include "server/sweeper.h"
#include "server/tokenizer.h"
#include "server/validate.h"

/* A per-session idle TTL: the same bounds as --session-ttl (a year at
 * most, so now + ttl never nears the int64 microsecond range). */
#define EG_SESSION_TTL_MAX_S 31536000
/* EndSession's reason: a short note, not a transcript. */
#define EG_END_REASON_MAX 1024

typedef Engram__Storage__V1__SessionStatsRecord eg_stats_rec;

/* ==== shared helpers ======================================================= */

static int eg_invalid_r(eg_req *r, const char *field, const char *what) {
  return eg_invalid(r->msg, sizeof r->msg, field, "%s", what);
}

eg_err eg_page_size(eg_req *r, const char *field, int32_t v, size_t *out) {
  const eg_config *c = r->srv->cfg;
  if (v < 0) return eg_invalid_r(r, field, "must not be negative");
  *out = v == 0 ? (size_t)c->default_page_size
                : (size_t)(v > c->max_page_size ? c->max_page_size : v);
  return EG_OK;
}

void eg_session_rec_free(void *p) { engram__storage__v1__session_record__free_unpacked(p, NULL); }
void eg_message_rec_free(void *p) { engram__storage__v1__message_record__free_unpacked(p, NULL); }

/* Loads the caller's session; NOT_FOUND names it. The record lives as long
 * as the call. */
static eg_err eg_session_load(eg_req *r, eg_txn *t, const char *sid, eg_session_rec **out) {
  eg_err e = eg_store_session_get(t, r->tenant, sid, out);
  if (e == EG_ENOTFOUND) {
    snprintf(r->msg, sizeof r->msg, "session_id: no session '%s'", sid);
    return e;
  }
  if (e != EG_OK) return e;
  return eg_arena_defer(r->arena, eg_session_rec_free, *out) == 0 ? EG_OK : EG_ENOMEM;
}

/* A message page token's position: direction byte ('a'scending/'d'escending)
 * + seq BE. The token binds the request (newest_first among it); the
 * direction byte still keeps the position's meaning in the position. */
static eg_err eg_msg_token(eg_req *r, const ProtobufCMessage *in, int descending, uint64_t seq,
                           char **out) {
  uint8_t b[9] = {descending ? 'd' : 'a'};
  _Static_assert(sizeof b <= EG_PAGE_POS_MAX, "a message position fits a page token");
  for (int i = 0; i < 8; i++) b[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
  return eg_page_token_seal(r, in, b, sizeof b, out);
}

static eg_err eg_msg_token_parse(eg_req *r, const ProtobufCMessage *in, int descending,
                                 uint64_t *seq) {
  uint8_t b[9];
  size_t n;
  eg_err e = eg_page_token_open(r, in, b, sizeof b, &n);
  if (e != EG_OK) return e;
  if (n != 9 || b[0] != (descending ? 'd' : 'a'))
    return eg_invalid_r(r, "page_token", "not a token for this listing order");
  *seq = 0;
  for (int i = 0; i < 8; i++) *seq = *seq << 8 | b[1 + i];
  return EG_OK;
}

static int64_t eg_estimate_tokens(size_t bytes) { return (int64_t)((bytes + 3) / 4); }

/* A requested ttl_seconds (0: the server's --session-ttl) in microseconds. */
static eg_err eg_ttl_us(eg_req *r, int64_t ttl_s, int64_t *out) {
  if (ttl_s < 0 || ttl_s > EG_SESSION_TTL_MAX_S)
    return eg_invalid(r->msg, sizeof r->msg, "session.ttl_seconds",
                      "%lld is outside 1 .. %d (0: the server's default)", (long long)ttl_s,
                      EG_SESSION_TTL_MAX_S);
  *out = (ttl_s ? ttl_s : r->srv->cfg->session_ttl_s) * 1000000;
  return EG_OK;
}

/* The user of session sid in prepare's snapshot, whose data key seals the
 * fields prepare seals: EndSession, UpdateSession and UpdateSummary are
 * prepare_reads writes for it. NOT_FOUND as apply would answer. */
static eg_err eg_session_user(eg_req *r, const char *sid, const char **user) {
  eg_session_rec *rec;
  eg_err e = eg_session_load(r, r->rtxn, sid, &rec);
  if (e == EG_OK) *user = rec->user_id;
  return e;
}

/* apply's check that the session it writes is of the user prepare sealed
 * for (user; NULL: nothing was sealed): one deleted and made again under
 * its id by another user since would hold fields under a key not its
 * user's, which DeleteUser of its user would not destroy. */
static eg_err eg_session_same_user(eg_req *r, const eg_session_rec *s, const char *user) {
  if (!user || strcmp(s->user_id, user) == 0) return EG_OK;
  snprintf(r->msg, sizeof r->msg,
           "session_id: session '%s' was replaced while the call was prepared; retry",
           s->session_id);
  return EG_EABORTED;
}

/* A new session may take id (no record has it, checked by the caller):
 * EG_OK, or EG_EUNAVAIL naming field when a session of this id was retired
 * (past retention or by DeleteSession) and the sweeper is still deleting
 * its messages: a new one now would find them. Free again once they are gone, so: retry later. */
static eg_err eg_session_id_reusable(eg_req *r, eg_txn *t, const char *field, const char *id) {
  int purging;
  eg_err e = eg_store_session_purging(t, r->tenant, id, &purging);
  if (e != EG_OK || !purging) return e;
  snprintf(r->msg, sizeof r->msg,
           "%s: '%s' belonged to a session (past retention or deleted by DeleteSession) "
           "whose messages are still being deleted; retry later",
           field, id);
  return EG_EUNAVAIL;
}

/* ==== CreateSession ========================================================= */

struct eg_create_state {
  const Engram__V1__Session *in;
  const char *session_id;
  ProtobufCBinaryData metadata_token;
  uint64_t *metadata_hashes; /* the blind index terms of the metadata */
  size_t n_metadata_hashes;
  int64_t ttl_us;
};

static eg_err eg_create_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__CreateSessionRequest *in = (const void *)msg;
  const Engram__V1__Session *s = in->session;
  eg_err e;
  if (!s) return eg_invalid_r(r, "session", "required");
  if ((e = eg_validate_id("session.user_id", s->user_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("session.session_id", s->session_id, 0, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("session.agent_id", s->agent_id, 0, r->msg, sizeof r->msg)))
    return e;
  struct eg_create_state *st = EG_ARENA_NEW(r->arena, struct eg_create_state);
  if (!st) return EG_ENOMEM;
  st->in = s;
  st->session_id = s->session_id;
  if ((e = eg_ttl_us(r, s->ttl_seconds, &st->ttl_us))) return e;
  if (eg_lang_check(s->language) != 0)
    return eg_invalid(r->msg, sizeof r->msg, "session.language",
                      "'%s' is not a BCP 47 tag (2..8 letters, then -subtags; at most %d bytes)",
                      s->language, EG_LANG_MAX);
  if (!s->session_id[0]) {
    char *id = eg_arena_alloc(r->arena, EG_ULID_LEN + 1);
    if (!id) return EG_ENOMEM;
    eg_ulid_new(id);
    st->session_id = id;
  }
  ProtobufCBinaryData packed;
  e = eg_metadata_pack(r, "session.metadata", (eg_kv_entry **)s->metadata, s->n_metadata, &packed);
  if (e == EG_OK && packed.len)
    e = eg_field_seal(r, s->user_id, "session", st->session_id, "metadata", packed.data,
                      packed.len, &st->metadata_token);
  if (e == EG_OK)
    e = eg_session_terms(r, (eg_kv_entry **)s->metadata, s->n_metadata, &st->metadata_hashes,
                         &st->n_metadata_hashes);
  r->state = st;
  return e;
}

static eg_err eg_create_apply(eg_req *r, eg_txn *t) {
  const struct eg_create_state *st = r->state;
  const int64_t ttl_us = st->ttl_us;
  eg_session_rec *old;
  /* A retry of a create that succeeded (same id, same user) gets the
   * session as it is now, and writes nothing. */
  eg_err e = eg_store_session_get(t, r->tenant, st->session_id, &old);
  if (e == EG_OK) {
    if (eg_arena_defer(r->arena, eg_session_rec_free, old) != 0) return EG_ENOMEM;
    if (strcmp(old->user_id, st->in->user_id) == 0)
      return eg_session_to_api(r, old, (Engram__V1__Session **)&r->resp);
    e = EG_EEXIST;
  }
  if (e == EG_EEXIST) {
    snprintf(r->msg, sizeof r->msg, "session.session_id: '%s' already exists", st->session_id);
    return e;
  }
  if (e != EG_ENOTFOUND) return e;
  if ((e = eg_session_id_reusable(r, t, "session.session_id", st->session_id)) ||
      (e = eg_field_sealed_live(r, st->in->user_id, "session", st->session_id,
                                &st->metadata_token)))
    return e;
  eg_session_rec rec = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  rec.session_id = (char *)st->session_id;
  rec.user_id = st->in->user_id;
  rec.agent_id = st->in->agent_id;
  rec.state = ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE;
  rec.metadata_token = st->metadata_token;
  rec.metadata_hashes = st->metadata_hashes;
  rec.n_metadata_hashes = st->n_metadata_hashes;
  rec.blind_key_id = r->blind_key_used; /* 0 (no metadata): no token to match */
  rec.create_time_us = rec.update_time_us = r->now_us;
  rec.expire_time_us = r->now_us + ttl_us;
  rec.ttl_us = ttl_us;
  rec.exclude_from_search = st->in->exclude_from_search;
  rec.language = st->in->language;
  if ((e = eg_store_session_put(t, r->tenant, &rec, NULL))) return e;
  return eg_session_to_api(r, &rec, (Engram__V1__Session **)&r->resp);
}

/* ==== GetSession / EndSession / DeleteSession ============================== */

static eg_err eg_get_session(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__GetSessionRequest *in = (const void *)msg;
  eg_session_rec *rec;
  eg_err e = eg_validate_id("session_id", in->session_id, 1, r->msg, sizeof r->msg);
  if (e == EG_OK) e = eg_session_load(r, r->rtxn, in->session_id, &rec);
  if (e == EG_OK) e = eg_session_to_api(r, rec, (Engram__V1__Session **)&r->resp);
  return e;
}

static eg_err eg_delete_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const char *sid = ((const Engram__V1__DeleteSessionRequest *)msg)->session_id;
  r->state = (void *)sid;
  return eg_validate_id("session_id", sid, 1, r->msg, sizeof r->msg);
}

struct eg_end_state {
  const char *session_id;
  const char *user;                 /* whose key sealed the reason; NULL: none */
  ProtobufCBinaryData reason_token; /* empty: no reason */
};

static eg_err eg_end_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__EndSessionRequest *in = (const void *)msg;
  eg_err e = eg_validate_id("session_id", in->session_id, 1, r->msg, sizeof r->msg);
  if (e != EG_OK) return e;
  size_t len = strlen(in->reason);
  if (len > EG_END_REASON_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "reason", "%zu bytes, limit %d", len, EG_END_REASON_MAX);
  struct eg_end_state *st = EG_ARENA_NEW(r->arena, struct eg_end_state);
  if (!st) return EG_ENOMEM;
  st->session_id = in->session_id;
  r->state = st;
  if (len == 0) return EG_OK;
  if ((e = eg_session_user(r, in->session_id, &st->user))) return e;
  return eg_field_seal(r, st->user, "session", in->session_id, "end_reason", in->reason, len,
                       &st->reason_token);
}

/* Ends s as of now, with reason (may be empty); a session that already
 * expired ended when it expired: its gone time, and so its retention,
 * stay (else ending it would restart retention and allow a late reopen).
 * s is a shallow copy of a loaded record: the reason token is arena
 * memory, and the loaded record's own buffers must stay where
 * free_unpacked expects them. */
static void eg_session_end(const eg_req *r, eg_session_rec *s, ProtobufCBinaryData reason) {
  int expired = eg_session_state_at(s, r->now_us) == ENGRAM__V1__SESSION_STATE__SESSION_STATE_EXPIRED;
  s->end_time_us = expired ? eg_store_session_gone_us(s) : r->now_us;
  s->state = ENGRAM__V1__SESSION_STATE__SESSION_STATE_ENDED;
  s->end_reason_token = reason;
  s->update_time_us = r->now_us;
}

static eg_err eg_end_apply(eg_req *r, eg_txn *t) {
  const struct eg_end_state *st = r->state;
  eg_session_rec *rec, upd;
  eg_err e = eg_session_load(r, t, st->session_id, &rec);
  if (e == EG_OK) e = eg_session_same_user(r, rec, st->user);
  if (e != EG_OK) return e;
  /* Ending an ENDED session again is a retry: it keeps its first end time
   * and reason, and nothing is written. */
  if (rec->state == ENGRAM__V1__SESSION_STATE__SESSION_STATE_ENDED)
    return eg_session_to_api(r, rec, (Engram__V1__Session **)&r->resp);
  if ((e = eg_field_sealed_live(r, st->user, "session", st->session_id, &st->reason_token)))
    return e;
  upd = *rec;
  eg_session_end(r, &upd, st->reason_token);
  if ((e = eg_store_session_put(t, r->tenant, &upd, rec))) return e;
  return eg_session_to_api(r, &upd, (Engram__V1__Session **)&r->resp);
}

/* ==== UpdateSession ========================================================= */

enum { EG_SU_METADATA = 1, EG_SU_AGENT = 2, EG_SU_TTL = 4, EG_SU_STATE = 8 };

static const struct {
  const char *path;
  unsigned bit;
} eg_su_paths[] = {{"metadata", EG_SU_METADATA},
                   {"agent_id", EG_SU_AGENT},
                   {"ttl_seconds", EG_SU_TTL},
                   {"state", EG_SU_STATE}};

struct eg_update_state {
  const Engram__V1__UpdateSessionRequest *in;
  unsigned mask;
  const char *user; /* whose key sealed metadata_token; NULL: none */
  ProtobufCBinaryData metadata_token;
  uint64_t *metadata_hashes; /* the blind index terms of the new metadata */
  size_t n_metadata_hashes;
  int64_t ttl_us;
};

static eg_err eg_update_mask(eg_req *r, struct eg_update_state *st) {
  const Google__Protobuf__FieldMask *fm = st->in->update_mask;
  if (!fm || fm->n_paths == 0) return eg_invalid_r(r, "update_mask", "required: name the fields to change");
  for (size_t i = 0; i < fm->n_paths; i++) {
    unsigned bit = 0;
    for (size_t j = 0; j < sizeof eg_su_paths / sizeof eg_su_paths[0] && !bit; j++)
      if (strcmp(fm->paths[i], eg_su_paths[j].path) == 0) bit = eg_su_paths[j].bit;
    if (!bit)
      return eg_invalid(r->msg, sizeof r->msg, "update_mask",
                        "'%s' is not an updatable field (metadata, agent_id, ttl_seconds, state)",
                        fm->paths[i]);
    st->mask |= bit;
  }
  return EG_OK;
}

static eg_err eg_update_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__UpdateSessionRequest *in = (const void *)msg;
  const Engram__V1__Session *s = in->session;
  eg_err e = eg_validate_id("session_id", in->session_id, 1, r->msg, sizeof r->msg);
  if (e != EG_OK) return e;
  if (!s) return eg_invalid_r(r, "session", "required");
  struct eg_update_state *st = EG_ARENA_NEW(r->arena, struct eg_update_state);
  if (!st) return EG_ENOMEM;
  st->in = in;
  r->state = st;
  if ((e = eg_update_mask(r, st))) return e;
  if ((st->mask & EG_SU_AGENT) &&
      (e = eg_validate_id("session.agent_id", s->agent_id, 0, r->msg, sizeof r->msg)))
    return e;
  if ((st->mask & EG_SU_TTL) && (e = eg_ttl_us(r, s->ttl_seconds, &st->ttl_us))) return e;
  if ((st->mask & EG_SU_STATE) && s->state != ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE &&
      s->state != ENGRAM__V1__SESSION_STATE__SESSION_STATE_ENDED)
    return eg_invalid(r->msg, sizeof r->msg, "session.state",
                      "must be ACTIVE (reopen) or ENDED (got %d)", (int)s->state);
  if (!(st->mask & EG_SU_METADATA)) return EG_OK;
  ProtobufCBinaryData packed;
  e = eg_metadata_pack(r, "session.metadata", (eg_kv_entry **)s->metadata, s->n_metadata, &packed);
  if (e == EG_OK && packed.len && (e = eg_session_user(r, in->session_id, &st->user)) == EG_OK)
    e = eg_field_seal(r, st->user, "session", in->session_id, "metadata", packed.data, packed.len,
                      &st->metadata_token);
  if (e == EG_OK)
    e = eg_session_terms(r, (eg_kv_entry **)s->metadata, s->n_metadata, &st->metadata_hashes,
                         &st->n_metadata_hashes);
  return e;
}

static eg_err eg_update_apply(eg_req *r, eg_txn *t) {
  const struct eg_update_state *st = r->state;
  const Engram__V1__Session *in = st->in->session;
  eg_session_rec *rec, upd;
  eg_err e = eg_session_load(r, t, st->in->session_id, &rec);
  if (e == EG_OK) e = eg_session_same_user(r, rec, st->user);
  if (e != EG_OK) return e;
  /* A shallow copy: new tokens are arena memory (see eg_session_end). */
  upd = *rec;
  int state = eg_session_state_at(rec, r->now_us);
  if (st->mask & EG_SU_METADATA) {
    if ((e = eg_field_sealed_live(r, st->user, "session", rec->session_id, &st->metadata_token)))
      return e;
    upd.metadata_token = st->metadata_token;
    upd.metadata_hashes = st->metadata_hashes;
    upd.n_metadata_hashes = st->n_metadata_hashes;
    upd.blind_key_id = r->blind_key_used; /* every token made again */
  }
  if (st->mask & EG_SU_AGENT) upd.agent_id = in->agent_id;
  if (st->mask & EG_SU_TTL) upd.ttl_us = st->ttl_us;
  if ((st->mask & EG_SU_STATE) && in->state == ENGRAM__V1__SESSION_STATE__SESSION_STATE_ENDED &&
      state != ENGRAM__V1__SESSION_STATE__SESSION_STATE_ENDED) {
    eg_session_end(r, &upd, (ProtobufCBinaryData){0});
  } else if ((st->mask & EG_SU_STATE) && in->state == ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE &&
             state != ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE) {
    /* Reopen: live again from now, the end forgotten, if still within
     * the tenant's expired-session retention (the sweeper may not have
     * removed it yet: a session past it is as good as gone). */
    int64_t gone_us = eg_store_session_gone_us(rec);
    eg_retention ret;
    if ((e = eg_retention_effective(t, r->srv->cfg, r->tenant, &ret))) return e;
    int64_t keep_s = ret.seconds[EG_TIER_SESSION];
    if (keep_s > 0 && gone_us > 0 && r->now_us - gone_us > keep_s * 1000000) {
      snprintf(r->msg, sizeof r->msg,
               "session.state: the session is past its retention (%lld s after it %s) and is "
               "being deleted; it cannot be reopened",
               (long long)keep_s,
               state == ENGRAM__V1__SESSION_STATE__SESSION_STATE_ENDED ? "ended" : "expired");
      return EG_EPRECOND;
    }
    upd.state = ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE;
    upd.end_time_us = 0;
    upd.end_reason_token = (ProtobufCBinaryData){0};
    upd.expire_time_us = r->now_us + upd.ttl_us;
  } else if ((st->mask & EG_SU_TTL) && state == ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE) {
    /* A new TTL counts from now; it does not revive an expired session
     * (that takes state ACTIVE). */
    upd.expire_time_us = r->now_us + upd.ttl_us;
  }
  upd.update_time_us = r->now_us;
  if ((e = eg_store_session_put(t, r->tenant, &upd, rec))) return e;
  return eg_session_to_api(r, &upd, (Engram__V1__Session **)&r->resp);
}

/* Stops at the first message visited, noting its seq. */
static int eg_first_seq_visit(void *arg, eg_message_rec *rec) {
  *(uint64_t *)arg = (uint64_t)rec->seq;
  eg_message_rec_free(rec);
  return 1;
}

/* A session of at most EG_SESSION_DELETE_INLINE_MAX messages goes whole
 * in this txn; a bigger one is retired (record and index entries at once,
 * so no read or search finds it, and its id is refused to a new session
 * until its messages are gone) and the sweeper purges its messages,
 * postings and retry records in bounded steps: deleting them here would
 * hold the writer and could log more than one record may. */
static eg_err eg_delete_apply(eg_req *r, eg_txn *t) {
  eg_session_rec *rec;
  uint64_t n = 0;
  eg_err e = eg_session_load(r, t, r->state, &rec);
  if (e != EG_OK) return e;
  if (rec->message_count <= EG_SESSION_DELETE_INLINE_MAX) {
    e = eg_store_session_delete(t, r->tenant, rec, &n);
  } else {
    /* The messages present, as the inline path counts them, in one seek:
     * seqs run 1..message_count and only the warm tier deletes messages
     * of a live session, lowest seq first, so those left are first..count. */
    uint64_t first = 0;
    e = eg_store_messages_scan(t, r->tenant, rec->session_id, 1, 0, eg_first_seq_visit, &first);
    if (e == EG_OK && first && first <= (uint64_t)rec->message_count)
      n = (uint64_t)rec->message_count - first + 1;
    if (e == EG_OK) e = eg_store_session_retire(t, r->tenant, rec->session_id, r->now_us);
  }
  if (e != EG_OK) return e;
  Engram__V1__DeleteSessionResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__DeleteSessionResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__delete_session_response__init(out);
  out->deleted_messages = (int64_t)n;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== ListMessages / GetContext ============================================= */

struct eg_msg_collect {
  eg_req *r;
  const char *sid;
  const char *user; /* the session's, whose data key seals its messages */
  Engram__V1__Message **msgs;
  size_t n, want;
  int more;           /* a message past the page or budget exists */
  uint64_t next_seq;  /* ListMessages: where the next page starts */
  int64_t stop_at_or_below; /* GetContext: summary_through_seq */
  int64_t max_tokens, tokens;
  eg_reply_budget budget;
  eg_err err;
  /* The scan decodes each record into the call's arena (no malloc, no free
   * per field; the records go with the arena). */
  ProtobufCAllocator records;
};

/* Opens rec into the page if it fits the reply budget, else sets more.
 * Returns 1 to stop the scan (no room, or an error in mc->err). */
static int eg_msg_collect_keep(struct eg_msg_collect *mc, eg_message_rec *rec) {
  mc->err = eg_message_to_api(mc->r, mc->user, mc->sid, rec, &mc->msgs[mc->n]);
  if (mc->err != EG_OK) return 1;
  if (!eg_reply_budget_take(&mc->budget, &mc->msgs[mc->n]->base)) {
    mc->more = 1;
    mc->next_seq = (uint64_t)rec->seq;
    return 1;
  }
  mc->n++;
  return 0;
}

static int eg_list_messages_visit(void *arg, eg_message_rec *rec) {
  struct eg_msg_collect *mc = arg;
  if (mc->n == mc->want) {
    mc->more = 1;
    mc->next_seq = (uint64_t)rec->seq;
    return 1;
  }
  return eg_msg_collect_keep(mc, rec);
}

static eg_err eg_msg_collect_init(eg_req *r, struct eg_msg_collect *mc, const eg_session_rec *s,
                                  size_t want) {
  *mc = (struct eg_msg_collect){.r = r, .sid = s->session_id, .user = s->user_id, .want = want};
  eg_reply_budget_init(&mc->budget, r);
  mc->msgs = EG_ARENA_ARRAY(r->arena, Engram__V1__Message *, want ? want : 1);
  return mc->msgs ? EG_OK : EG_ENOMEM;
}

eg_err eg_messages_page(eg_req *r, eg_txn *t, const eg_session_rec *s, uint64_t start,
                        int descending, size_t want, eg_message_page *out) {
  struct eg_msg_collect mc;
  eg_err e = eg_msg_collect_init(r, &mc, s, want);
  if (e == EG_OK)
    e = eg_store_messages_scan_in(t, r->tenant, s->session_id, start, descending,
                                  eg_arena_pb_allocator(r->arena, &mc.records),
                                  eg_list_messages_visit, &mc);
  if (e == EG_OK) e = mc.err;
  if (e != EG_OK) return e;
  *out = (eg_message_page){.msgs = mc.msgs, .n = mc.n, .more = mc.more, .next_seq = mc.next_seq};
  return EG_OK;
}

static eg_err eg_list_messages(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__ListMessagesRequest *in = (const void *)msg;
  eg_message_page page;
  eg_session_rec *rec;
  size_t want = 0;
  uint64_t start = in->newest_first ? UINT64_MAX : 1;
  eg_err e;
  if ((e = eg_validate_id("session_id", in->session_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_page_size(r, "page_size", in->page_size, &want)) ||
      (in->page_token[0] && (e = eg_msg_token_parse(r, msg, in->newest_first, &start))) ||
      (e = eg_session_load(r, r->rtxn, in->session_id, &rec)) ||
      (e = eg_messages_page(r, r->rtxn, rec, start, in->newest_first, want, &page)))
    return e;
  Engram__V1__ListMessagesResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__ListMessagesResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__list_messages_response__init(out);
  out->messages = page.msgs;
  out->n_messages = page.n;
  if (page.more &&
      (e = eg_msg_token(r, msg, in->newest_first, page.next_seq, &out->next_page_token)) != EG_OK)
    return e;
  r->resp = &out->base;
  return EG_OK;
}

static int eg_context_visit(void *arg, eg_message_rec *rec) {
  struct eg_msg_collect *mc = arg;
  if (rec->seq <= mc->stop_at_or_below) return 1;
  /* The newest contiguous run that fits (max_messages, max_tokens and the
   * reply budget): the first misfit ends it, so a large message is never
   * skipped to make room for older ones. */
  if (mc->n == mc->want || (mc->max_tokens && mc->tokens + rec->token_count > mc->max_tokens)) {
    mc->more = 1;
    return 1;
  }
  if (eg_msg_collect_keep(mc, rec)) return 1;
  mc->tokens += rec->token_count;
  return 0;
}

static eg_err eg_get_context(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__GetContextRequest *in = (const void *)msg;
  struct eg_msg_collect mc;
  eg_session_rec *rec;
  size_t want = 0, len;
  eg_err e;
  if ((e = eg_validate_id("session_id", in->session_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_page_size(r, "max_messages", in->max_messages, &want)))
    return e;
  if (in->max_tokens < 0) return eg_invalid_r(r, "max_tokens", "must not be negative");
  if ((e = eg_session_load(r, r->rtxn, in->session_id, &rec)) ||
      (e = eg_msg_collect_init(r, &mc, rec, want)))
    return e;
  mc.stop_at_or_below = rec->summary_through_seq;
  mc.max_tokens = in->max_tokens;
  Engram__V1__GetContextResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__GetContextResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__get_context_response__init(out);
  e = eg_field_open(r, rec->user_id, "session", rec->session_id, "summary", &rec->summary_token,
                    &out->summary, &len);
  if (e != EG_OK) return e;
  if (len) eg_reply_budget_charge(&mc.budget, len);
  e = eg_store_messages_scan_in(r->rtxn, r->tenant, rec->session_id, UINT64_MAX, 1,
                                eg_arena_pb_allocator(r->arena, &mc.records), eg_context_visit,
                                &mc);
  if (e == EG_OK) e = mc.err;
  if (e != EG_OK) return e;
  /* Collected newest first; the prompt wants oldest first. */
  for (size_t i = 0; i < mc.n / 2; i++) {
    Engram__V1__Message *tmp = mc.msgs[i];
    mc.msgs[i] = mc.msgs[mc.n - 1 - i];
    mc.msgs[mc.n - 1 - i] = tmp;
  }
  out->summary_through_seq = rec->summary_through_seq;
  out->messages = mc.msgs;
  out->n_messages = mc.n;
  out->total_tokens = mc.tokens;
  out->truncated = mc.more;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== AppendMessages ======================================================== */

/* A message's keyword index fields (MessageRecord.index_*, from
 * eg_message_index_fields) in an otherwise empty record; index_version 0:
 * not indexed. */
typedef eg_message_rec eg_msg_index;

/* AppendMessages is a prepare_reads write: prepare reads the session (its
 * user, language and exclude_from_search never change after create) and
 * tokenizes and hashes every message on the worker, so the writer only
 * stores the result.
 *
 * Sealing ahead: a message's tokens are bound to its record id
 * "<session_id>/<seq>" (eg_message_record_id), and its seq is known only
 * on the writer. Prepare predicts it from its snapshot (message_count + 1
 * on, skipping the retries it finds there) and seals each message for
 * that seq (unless the session's last append missed its prediction:
 * eg_append_missed). Apply uses a prepared token only where the seq it assigns is
 * the one predicted and the session's user is the one sealed for (and the
 * key generation is still live, eg_field_sealed_live); anywhere else (an
 * append to the same session committed in between) it seals on the
 * writer, as before. A token is never stored at a seq or session other
 * than the one it was sealed for. */
struct eg_append_state {
  const Engram__V1__AppendMessagesRequest *in;
  ProtobufCBinaryData *metadata;  /* packed, per message */
  int32_t *token_count;           /* given, or estimated */
  ProtobufCBinaryData *embedding; /* float32 LE, per message; empty: none */
  const eg_msg_index *index;      /* per message, for the session prepare saw */
  int64_t seen_create_us;         /* that session's create time; 0: none was */
  /* Sealed ahead (above), per message: the seq sealed for (0: none), and
   * its content and metadata tokens under sealed_user's data key. */
  int64_t *sealed_seq;
  ProtobufCBinaryData *content_token, *metadata_token;
  const char *sealed_user;
  /* The session prepare read and its summary, end reason and metadata
   * opened there (NULL: it has none): the reply takes them when apply
   * finds the same tokens, instead of opening them on the writer. */
  const eg_session_rec *seen;
  const Engram__V1__Session *seen_opened;
  _Atomic unsigned char *missed; /* seen's slot of eg_append_missed */
};

/* Whether the last append to a session found prepare's snapshot behind
 * (another append to it committed in between), by a hash of tenant and
 * session id. Prepare seals ahead only for a session whose last append
 * did not: on a session many clients append to at once, all but the first
 * append of each batch would miss and their seals would be thrown away.
 * Apply learns it from the message count prepare saw, sealed or not. A
 * collision only costs a seal, or a seal on the writer: never a token in
 * the wrong place (apply checks each seq). */
#define EG_APPEND_MISSED_SLOTS 4096
static _Atomic unsigned char eg_append_missed[EG_APPEND_MISSED_SLOTS];

static _Atomic unsigned char *eg_append_missed_slot(const char *tenant, const char *sid) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const char *p = tenant; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
  h = (h ^ '/') * 16777619u;
  for (const char *p = sid; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
  return &eg_append_missed[h % EG_APPEND_MISSED_SLOTS];
}

static eg_err eg_append_check_message(eg_req *r, struct eg_append_state *st, size_t i) {
  const Engram__V1__Message *m = st->in->messages[i];
  char field[64];
  eg_err e;
  if (m->role <= ENGRAM__V1__ROLE__ROLE_UNSPECIFIED || m->role > ENGRAM__V1__ROLE__ROLE_TOOL) {
    snprintf(field, sizeof field, "messages[%zu].role", i);
    return eg_invalid(r->msg, sizeof r->msg, field, "must be USER, ASSISTANT, SYSTEM or TOOL (got %d)",
                      (int)m->role);
  }
  size_t len = strlen(m->content);
  if ((int64_t)len > r->srv->cfg->max_content_bytes) {
    snprintf(field, sizeof field, "messages[%zu].content", i);
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu bytes, limit %lld", len,
                      (long long)r->srv->cfg->max_content_bytes);
  }
  if (m->token_count < 0) {
    snprintf(field, sizeof field, "messages[%zu].token_count", i);
    return eg_invalid_r(r, field, "must not be negative");
  }
  snprintf(field, sizeof field, "messages[%zu].client_message_id", i);
  if ((e = eg_validate_id(field, m->client_message_id, 0, r->msg, sizeof r->msg))) return e;
  snprintf(field, sizeof field, "messages[%zu].embedding", i);
  float *vec, norm;
  if ((e = eg_embedding_check(r, field, m->embedding, m->n_embedding, &vec, &norm))) return e;
  st->embedding[i] = (ProtobufCBinaryData){.len = m->n_embedding * sizeof(float), .data = (uint8_t *)vec};
  snprintf(field, sizeof field, "messages[%zu].metadata", i);
  e = eg_metadata_pack(r, field, (eg_kv_entry **)m->metadata, m->n_metadata, &st->metadata[i]);
  st->token_count[i] = m->token_count ? m->token_count : (int32_t)eg_estimate_tokens(len);
  return e;
}

/* The index fields of in's messages for session s into *out (an arena
 * array): every version 0 when --index-messages is false or s excludes
 * itself from search. Runs on the worker (prepare), or on the writer when
 * the session was replaced after prepare read it. */
static eg_err eg_append_index(eg_req *r, const Engram__V1__AppendMessagesRequest *in,
                              const eg_session_rec *s, const eg_msg_index **out) {
  eg_msg_index *idx = EG_ARENA_ARRAY(r->arena, eg_msg_index, in->n_messages);
  eg_blind_ctx *ctx;
  eg_err e;
  if (!idx) return EG_ENOMEM;
  for (size_t i = 0; i < in->n_messages; i++)
    idx[i] = (eg_msg_index)ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  *out = idx;
  if (strcmp(r->srv->cfg->index_messages, "true") != 0 || s->exclude_from_search) return EG_OK;
  if ((e = eg_blind_ctx_of(r, &ctx))) return e;
  for (size_t i = 0; i < in->n_messages; i++) {
    const char *text = in->messages[i]->content;
    if ((e = eg_message_index_fields(r->arena, ctx, r->blind_key_used, EG_TOKENIZER_VERSION,
                                     s->language, s->user_id,
                                     text, strlen(text), &idx[i])))
      return e;
  }
  return EG_OK;
}

/* Seals message i for the seq seq of session s into *content and
 * *metadata, on the worker (eg_field_seal, the key exists) or on the
 * writer (existing: never makes a key). */
static eg_err eg_append_seal(eg_req *r, int existing, const eg_session_rec *s, size_t i,
                             int64_t seq, ProtobufCBinaryData *content,
                             ProtobufCBinaryData *metadata) {
  const struct eg_append_state *st = r->state;
  const char *text = st->in->messages[i]->content;
  const char *rid = eg_message_record_id(r, s->session_id, seq);
  if (!rid) return EG_ENOMEM;
  eg_err (*seal)(eg_req *, const char *, const char *, const char *, const char *, const void *,
                 size_t, ProtobufCBinaryData *) = existing ? eg_field_seal_existing : eg_field_seal;
  eg_err e = seal(r, s->user_id, "message", rid, "content", text, strlen(text), content);
  if (e == EG_OK && st->metadata[i].len)
    e = seal(r, s->user_id, "message", rid, "metadata", st->metadata[i].data, st->metadata[i].len,
             metadata);
  return e;
}

/* Seals ahead (struct eg_append_state) each message for the seq it takes
 * if s, as prepare's snapshot holds it, is still the session when apply
 * runs; a message this snapshot already holds by client_message_id (a
 * retry: apply answers it with the stored one) takes no seq. */
static eg_err eg_append_seal_ahead(eg_req *r, struct eg_append_state *st, const eg_session_rec *s) {
  const size_t n = st->in->n_messages;
  st->sealed_seq = EG_ARENA_ARRAY(r->arena, int64_t, n);
  st->content_token = EG_ARENA_ARRAY(r->arena, ProtobufCBinaryData, n);
  st->metadata_token = EG_ARENA_ARRAY(r->arena, ProtobufCBinaryData, n);
  if (!st->sealed_seq || !st->content_token || !st->metadata_token) return EG_ENOMEM;
  st->sealed_user = s->user_id;
  int64_t seq = s->message_count;
  for (size_t i = 0; i < n; i++) {
    const char *cid = st->in->messages[i]->client_message_id;
    uint64_t stored;
    if (cid[0]) {
      eg_err e = eg_store_idem_get(r->rtxn, r->tenant, s->session_id, cid, &stored);
      if (e == EG_OK) continue;
      if (e != EG_ENOTFOUND) return e;
    }
    st->sealed_seq[i] = ++seq;
    eg_err e = eg_append_seal(r, 0, s, i, seq, &st->content_token[i], &st->metadata_token[i]);
    if (e != EG_OK) return e;
  }
  return EG_OK;
}

static eg_err eg_append_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__AppendMessagesRequest *in = (const void *)msg;
  eg_err e = eg_validate_id("session_id", in->session_id, 1, r->msg, sizeof r->msg);
  if (e != EG_OK) return e;
  if (in->expected_last_seq < 0) return eg_invalid_r(r, "expected_last_seq", "must not be negative");
  if (in->n_messages == 0) return eg_invalid_r(r, "messages", "at least one message is required");
  if (in->n_messages > (size_t)r->srv->cfg->max_append_messages)
    return eg_invalid(r->msg, sizeof r->msg, "messages", "%zu messages, limit %d per call",
                      in->n_messages, r->srv->cfg->max_append_messages);
  struct eg_append_state *st = EG_ARENA_NEW(r->arena, struct eg_append_state);
  if (!st) return EG_ENOMEM;
  st->in = in;
  st->metadata = EG_ARENA_ARRAY(r->arena, ProtobufCBinaryData, in->n_messages);
  st->token_count = EG_ARENA_ARRAY(r->arena, int32_t, in->n_messages);
  st->embedding = EG_ARENA_ARRAY(r->arena, ProtobufCBinaryData, in->n_messages);
  if (!st->metadata || !st->token_count || !st->embedding) return EG_ENOMEM;
  for (size_t i = 0; i < in->n_messages; i++)
    if ((e = eg_append_check_message(r, st, i))) return e;
  r->state = st;
  /* No session yet: apply answers NOT_FOUND, or indexes for the one
   * created since. */
  eg_session_rec *s;
  e = eg_store_session_get(r->rtxn, r->tenant, in->session_id, &s);
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e != EG_OK) return e;
  if (eg_arena_defer(r->arena, eg_session_rec_free, s) != 0) return EG_ENOMEM;
  st->seen_create_us = s->create_time_us;
  /* Prepare seals ahead, and apply seals where the seq it assigns is not
   * the predicted one, with the user's data key: made here, on the
   * worker, as the writer never makes one (a session replaced since by
   * another user's without a key, or a key destroyed since, answers
   * ABORTED: retry). */
  if ((e = eg_field_key_ready(r, s->user_id)) || (e = eg_append_index(r, in, s, &st->index)))
    return e;
  if (eg_session_state_at(s, r->now_us) != ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE)
    return EG_OK; /* apply refuses new messages, or answers retries only */
  st->seen = s;
  st->missed = eg_append_missed_slot(r->tenant, s->session_id);
  if (!atomic_load_explicit(st->missed, memory_order_relaxed) &&
      (e = eg_append_seal_ahead(r, st, s)))
    return e;
  /* Opened only when there is something to open: empty tokens cost
   * nothing on the writer either. */
  if (!s->summary_token.len && !s->end_reason_token.len && !s->metadata_token.len) return EG_OK;
  Engram__V1__Session *opened;
  if ((e = eg_session_to_api(r, s, &opened))) return e;
  st->seen_opened = opened;
  return EG_OK;
}

/* A message whose client_message_id this session already has: answer with
 * the stored one (its seq and time), write nothing. Sets *found. */
static eg_err eg_append_find_retry(eg_req *r, eg_txn *t, const eg_session_rec *s,
                                   const Engram__V1__Message *m, Engram__V1__Message **out,
                                   int *found) {
  const char *sid = s->session_id;
  uint64_t seq;
  eg_message_rec *rec;
  *found = 0;
  if (!m->client_message_id[0]) return EG_OK;
  eg_err e = eg_store_idem_get(t, r->tenant, sid, m->client_message_id, &seq);
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e == EG_OK) e = eg_store_message_get(t, r->tenant, sid, seq, &rec);
  if (e != EG_OK) return e;
  if (eg_arena_defer(r->arena, eg_message_rec_free, rec) != 0) return EG_ENOMEM;
  *found = 1;
  return eg_message_to_api(r, s->user_id, sid, rec, out);
}

/* Counts one appended message into stats. */
static void eg_stats_add(eg_stats_rec *stats, int role, int64_t tokens, int64_t time_us) {
  switch (role) {
  case ENGRAM__V1__ROLE__ROLE_USER: stats->user_messages++; break;
  case ENGRAM__V1__ROLE__ROLE_ASSISTANT: stats->assistant_messages++; break;
  case ENGRAM__V1__ROLE__ROLE_SYSTEM: stats->system_messages++; break;
  default: stats->tool_messages++; break; /* prepare admits only the four roles */
  }
  stats->total_tokens += tokens;
  if (!stats->first_message_time_us) stats->first_message_time_us = time_us;
  stats->last_message_time_us = time_us;
}

static eg_err eg_append_one(eg_req *r, eg_txn *t, eg_session_rec *s, eg_stats_rec *stats,
                            const eg_msg_index *x, size_t i, Engram__V1__Message **out) {
  const struct eg_append_state *st = r->state;
  const Engram__V1__Message *m = st->in->messages[i];
  eg_message_rec rec = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  rec.seq = s->message_count + 1;
  rec.role = m->role;
  rec.token_count = st->token_count[i];
  rec.client_message_id = m->client_message_id;
  rec.create_time_us = r->now_us;
  rec.embedding = st->embedding[i];
  if (x->index_version) {
    rec.index_version = x->index_version;
    rec.index_terms = x->index_terms;
    rec.n_index_terms = x->n_index_terms;
    rec.index_tf = x->index_tf;
    rec.index_words = x->index_words;
    rec.index_user_id = x->index_user_id;
    rec.blind_key_id = x->blind_key_id;
  }
  eg_err e;
  if (st->sealed_seq && st->sealed_seq[i] == rec.seq && strcmp(s->user_id, st->sealed_user) == 0) {
    /* Sealed ahead for this very seq and user: its key must still be live. */
    const char *rid = eg_message_record_id(r, s->session_id, rec.seq);
    rec.content_token = st->content_token[i];
    rec.metadata_token = st->metadata_token[i];
    if (!rid) return EG_ENOMEM;
    if ((e = eg_field_sealed_live(r, s->user_id, "message", rid, &rec.content_token)) ||
        (e = eg_field_sealed_live(r, s->user_id, "message", rid, &rec.metadata_token)))
      return e;
  } else {
    /* Sealed here, on the writer: under the key prepare made
     * (eg_field_key_ready), never a new one. */
    if ((e = eg_append_seal(r, 1, s, i, rec.seq, &rec.content_token, &rec.metadata_token)))
      return e;
  }
  e = eg_store_message_put(t, r->tenant, s->session_id, &rec);
  if (e != EG_OK) return e;
  s->message_count = rec.seq;
  eg_stats_add(stats, rec.role, rec.token_count, rec.create_time_us);
  /* The reply echoes the request's plaintext: nothing to decrypt. */
  Engram__V1__Message *am = EG_ARENA_NEW(r->arena, Engram__V1__Message);
  if (!am) return EG_ENOMEM;
  engram__v1__message__init(am);
  if (!(am->create_time = eg_timestamp(r, rec.create_time_us))) return EG_ENOMEM;
  am->session_id = s->session_id;
  am->seq = rec.seq;
  am->role = rec.role;
  am->content = m->content;
  am->metadata = m->metadata;
  am->n_metadata = m->n_metadata;
  am->token_count = rec.token_count;
  am->client_message_id = m->client_message_id;
  *out = am;
  return EG_OK;
}

static int eg_same_token(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b) {
  return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* The reply's session, upd as apply stored it: its sealed fields are the
 * ones prepare opened when their tokens are unchanged since (an append
 * does not touch them), so the writer opens nothing; else opened here. */
static eg_err eg_append_reply_session(eg_req *r, const eg_session_rec *upd,
                                      Engram__V1__Session **out) {
  const struct eg_append_state *st = r->state;
  const eg_session_rec *seen = st->seen;
  if (!seen || !eg_same_token(&seen->summary_token, &upd->summary_token) ||
      !eg_same_token(&seen->end_reason_token, &upd->end_reason_token) ||
      !eg_same_token(&seen->metadata_token, &upd->metadata_token))
    return eg_session_to_api(r, upd, out);
  eg_session_rec bare = *upd;
  bare.summary_token = bare.end_reason_token = bare.metadata_token = (ProtobufCBinaryData){0};
  eg_err e = eg_session_to_api(r, &bare, out);
  if (e != EG_OK || !st->seen_opened) return e;
  (*out)->summary = st->seen_opened->summary;
  (*out)->end_reason = st->seen_opened->end_reason;
  (*out)->metadata = st->seen_opened->metadata;
  (*out)->n_metadata = st->seen_opened->n_metadata;
  return EG_OK;
}

static eg_err eg_append_apply(eg_req *r, eg_txn *t) {
  const struct eg_append_state *st = r->state;
  const size_t n = st->in->n_messages;
  eg_session_rec *s;
  eg_err e = eg_session_load(r, t, st->in->session_id, &s);
  if (e != EG_OK) return e;
  /* Deleted and made again since prepare (or made since): its user or
   * language may differ, so index again, here. */
  const eg_msg_index *index = st->index;
  if (s->create_time_us != st->seen_create_us && (e = eg_append_index(r, st->in, s, &index)))
    return e;
  if (st->missed)
    atomic_store_explicit(st->missed, s->message_count != st->seen->message_count,
                          memory_order_relaxed);
  Engram__V1__AppendMessagesResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__AppendMessagesResponse);
  Engram__V1__Message **msgs = EG_ARENA_ARRAY(r->arena, Engram__V1__Message *, n);
  if (!out || !msgs) return EG_ENOMEM;
  engram__v1__append_messages_response__init(out);
  const int64_t before = s->message_count;
  /* Counted on a copy: s's own stats (if any) belong to free_unpacked. */
  eg_stats_rec stats = ENGRAM__STORAGE__V1__SESSION_STATS_RECORD__INIT;
  if (s->stats) stats = *s->stats;
  for (size_t i = 0; i < n; i++) {
    int found;
    e = eg_append_find_retry(r, t, s, st->in->messages[i], &msgs[i], &found);
    if (e != EG_OK) return e;
    if (found) continue;
    /* Checked here, after retries were answered, so that a retry of an
     * append that succeeded still succeeds once the session has ended. */
    int state = eg_session_state_at(s, r->now_us);
    if (state != ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE) {
      snprintf(r->msg, sizeof r->msg, "session_id: session '%s' is %s", s->session_id,
               state == ENGRAM__V1__SESSION_STATE__SESSION_STATE_ENDED ? "ended" : "expired");
      return EG_EPRECOND;
    }
    /* Checked before the first new message is written, after retries:
     * a retried append that succeeded still succeeds. */
    if (st->in->expected_last_seq && s->message_count == before &&
        before != st->in->expected_last_seq) {
      snprintf(r->msg, sizeof r->msg,
               "expected_last_seq: %" PRId64 " expected, the session's last seq is %" PRId64,
               st->in->expected_last_seq, before);
      return EG_EPRECOND;
    }
    if ((e = eg_append_one(r, t, s, &stats, &index[i], i, &msgs[i]))) return e;
  }
  eg_session_rec upd = *s;
  upd.stats = &stats;
  if (s->message_count != before) {
    upd.update_time_us = r->now_us;
    upd.expire_time_us = r->now_us + s->ttl_us;
    if ((e = eg_store_session_put(t, r->tenant, &upd, s))) return e;
  }
  out->messages = msgs;
  out->n_messages = n;
  if ((e = eg_append_reply_session(r, &upd, &out->session))) return e;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== UpdateSummary ========================================================= */

struct eg_summary_state {
  const Engram__V1__UpdateSummaryRequest *in;
  const char *user; /* whose key sealed token; NULL: none */
  ProtobufCBinaryData token;
};

static eg_err eg_summary_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__UpdateSummaryRequest *in = (const void *)msg;
  eg_err e = eg_validate_id("session_id", in->session_id, 1, r->msg, sizeof r->msg);
  if (e != EG_OK) return e;
  size_t len = strlen(in->summary);
  if ((int64_t)len > r->srv->cfg->max_content_bytes)
    return eg_invalid(r->msg, sizeof r->msg, "summary", "%zu bytes, limit %lld", len,
                      (long long)r->srv->cfg->max_content_bytes);
  if (in->through_seq < 0) return eg_invalid_r(r, "through_seq", "must not be negative");
  if (in->expected_through_seq < 0)
    return eg_invalid_r(r, "expected_through_seq", "must not be negative");
  struct eg_summary_state *st = EG_ARENA_NEW(r->arena, struct eg_summary_state);
  if (!st) return EG_ENOMEM;
  st->in = in;
  r->state = st;
  if (len == 0) return EG_OK; /* an empty token means no summary */
  if ((e = eg_session_user(r, in->session_id, &st->user))) return e;
  return eg_field_seal(r, st->user, "session", in->session_id, "summary", in->summary, len,
                       &st->token);
}

static eg_err eg_summary_apply(eg_req *r, eg_txn *t) {
  const struct eg_summary_state *st = r->state;
  eg_session_rec *s;
  eg_err e = eg_session_load(r, t, st->in->session_id, &s);
  if (e == EG_OK) e = eg_session_same_user(r, s, st->user);
  if (e != EG_OK) return e;
  if (st->in->expected_through_seq && st->in->expected_through_seq != s->summary_through_seq) {
    snprintf(r->msg, sizeof r->msg,
             "expected_through_seq: %" PRId64 " expected, the summary covers through %" PRId64,
             st->in->expected_through_seq, s->summary_through_seq);
    return EG_EPRECOND;
  }
  if (st->in->through_seq > s->message_count)
    return eg_invalid(r->msg, sizeof r->msg, "through_seq", "%" PRId64 " is beyond the last message (%" PRId64 ")",
                      st->in->through_seq, s->message_count);
  if (st->in->through_seq < s->summary_through_seq) {
    snprintf(r->msg, sizeof r->msg,
             "through_seq: %" PRId64 " is older than the current summary's (%" PRId64 ")",
             st->in->through_seq, s->summary_through_seq);
    return EG_EPRECOND;
  }
  /* A shallow copy: the new token is arena memory, and s's own buffers
   * must stay where free_unpacked expects them. */
  if ((e = eg_field_sealed_live(r, st->user, "session", s->session_id, &st->token))) return e;
  eg_session_rec upd = *s;
  upd.summary_token = st->token;
  upd.summary_through_seq = st->in->through_seq;
  upd.update_time_us = r->now_us;
  if ((e = eg_store_session_put(t, r->tenant, &upd, s))) return e;
  return eg_session_to_api(r, &upd, (Engram__V1__Session **)&r->resp);
}

/* ==== ForkSession =========================================================== */

/* prepare reads the source in the worker's snapshot (prepare_reads), opens
 * every field it copies and seals it again for the fork (each seal binds
 * its session id, and a message's its seq), indexes each copy's content
 * as an append would (eg_fork_message); apply, on the writer, checks
 * the source is still the one read and writes.
 *
 * The whole copy is one write txn, so one log record, which a replica
 * receives in one message: prepare stops as soon as the copy's bytes pass
 * --max-fork-bytes (at most EG_FORK_BYTES_CEIL, well under what a replica
 * takes), and tells the writer its size, so that no batch adds more to it.
 * That bound is also about what prepare holds in memory (twice: the
 * source's records and their copies) and how long apply holds the
 * writer. */
struct eg_fork_state {
  const Engram__V1__ForkSessionRequest *in;
  const char *new_id;
  /* new_id was taken in prepare's snapshot: nothing was copied, apply
   * answers a retry or ALREADY_EXISTS. */
  int taken;
  const eg_session_rec *src; /* the source as prepare read it */
  ProtobufCBinaryData metadata_token, summary_token; /* sealed for new_id */
  /* The metadata's terms under the write key (r->blind_key_used): made
   * again, not copied, so that a fork of a session still under an old
   * blind key lands under the write key (server/blind_rotation.h). */
  uint64_t *metadata_hashes;
  size_t n_metadata_hashes;
  int64_t summary_through_seq;
  eg_message_rec *msgs; /* seq ascending, sealed for new_id */
  size_t n;
  size_t bytes; /* what apply logs, so far */
  eg_stats_rec stats; /* of msgs */
};

static void eg_fork_entry_init(void *e) { engram__v1__session__metadata_entry__init(e); }

/* Opens a sealed field of (kind, from_id) and seals it for (kind, to_id);
 * an empty token stays empty. */
static eg_err eg_fork_reseal(eg_req *r, const char *user, const char *kind, const char *from_id,
                             const char *to_id, const char *field, const ProtobufCBinaryData *tok,
                             ProtobufCBinaryData *out) {
  char *pt;
  size_t len;
  *out = (ProtobufCBinaryData){0};
  if (!tok->len) return EG_OK;
  eg_err e = eg_field_open(r, user, kind, from_id, field, tok, &pt, &len);
  if (e == EG_OK) e = eg_field_seal(r, user, kind, to_id, field, pt, len, out);
  return e;
}

struct eg_fork_copy {
  eg_req *r;
  struct eg_fork_state *st;
  /* Indexes the copies; NULL: they go unindexed (--index-messages false,
   * or the source excludes itself from search), as an append would. */
  eg_blind_ctx *ctx;
  eg_err err;
};

/* Seals the copy m of message rec (from record id `from` to `to`) and
 * sets m's index fields from its content, as AppendMessages would now:
 * the source's may be version 0 (appended under --index-messages=false,
 * or awaiting the reindex, whose cursor may be past the fork's id). */
static eg_err eg_fork_message(struct eg_fork_copy *fc, const eg_message_rec *rec,
                              const char *from, const char *to, eg_message_rec *m) {
  eg_req *r = fc->r;
  const eg_session_rec *src = fc->st->src;
  char *text = NULL;
  size_t len = 0;
  eg_err e = EG_OK;
  *m = *rec;
  m->content_token = m->metadata_token = (ProtobufCBinaryData){0};
  if (rec->content_token.len &&
      ((e = eg_field_open(r, src->user_id, "message", from, "content", &rec->content_token,
                          &text, &len)) ||
       (e = eg_field_seal(r, src->user_id, "message", to, "content", text, len,
                          &m->content_token))))
    return e;
  if ((e = eg_fork_reseal(r, src->user_id, "message", from, to, "metadata", &rec->metadata_token,
                          &m->metadata_token)))
    return e;
  eg_message_rec plain = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  m->index_version = plain.index_version;
  m->n_index_terms = plain.n_index_terms;
  m->index_terms = plain.index_terms;
  m->index_tf = plain.index_tf;
  m->index_words = plain.index_words;
  m->index_user_id = plain.index_user_id;
  m->blind_key_id = plain.blind_key_id;
  if (!fc->ctx) return EG_OK;
  return eg_message_index_fields(r->arena, fc->ctx, r->blind_key_used, EG_TOKENIZER_VERSION,
                                 src->language,
                                 src->user_id, text ? text : "", len, m);
}

static int eg_fork_visit(void *arg, eg_message_rec *rec) {
  struct eg_fork_copy *fc = arg;
  struct eg_fork_state *st = fc->st;
  eg_req *r = fc->r;
  /* Deferred, not freed: the copy shares its strings. */
  if (eg_arena_defer(r->arena, eg_message_rec_free, rec) != 0) return fc->err = EG_ENOMEM, 1;
  if (rec->seq > st->in->through_seq) return 1;
  const char *from = eg_message_record_id(r, st->src->session_id, rec->seq);
  const char *to = eg_message_record_id(r, st->new_id, rec->seq);
  if (!from || !to) return fc->err = EG_ENOMEM, 1;
  eg_message_rec *m = &st->msgs[st->n];
  size_t len;
  if ((fc->err = eg_fork_message(fc, rec, from, to, m)) ||
      (fc->err = eg_store_message_put_len(r->srv->store, r->tenant, st->new_id, m, &len)))
    return 1;
  /* At once: the rest of the prefix is not read. Messages before this one
   * fit, so a fork through rec->seq - 1 does. The length counts the
   * copy's postings: an indexed message logs one key per distinct word. */
  if ((st->bytes += len) > (size_t)r->srv->cfg->max_fork_bytes) {
    fc->err = eg_invalid(r->msg, sizeof r->msg, "through_seq",
                         "%" PRId64 ": the messages through seq %" PRId64
                         " already take %zu bytes to copy, more than %" PRId64
                         " (--max-fork-bytes); fork a smaller prefix",
                         st->in->through_seq, rec->seq, st->bytes, r->srv->cfg->max_fork_bytes);
    return 1;
  }
  eg_stats_add(&st->stats, m->role, m->token_count, m->create_time_us);
  st->n++;
  return 0;
}

static eg_err eg_fork_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__ForkSessionRequest *in = (const void *)msg;
  const int cap = r->srv->cfg->max_fork_messages;
  eg_session_rec *src, *taken;
  eg_err e;
  if ((e = eg_validate_id("session_id", in->session_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("new_session_id", in->new_session_id, 0, r->msg, sizeof r->msg)))
    return e;
  if (in->through_seq < 1)
    return eg_invalid(r->msg, sizeof r->msg, "through_seq",
                      "%" PRId64 ": must be 1 .. the session's message_count", in->through_seq);
  /* Before anything is read: the copy grows with through_seq. */
  if (in->through_seq > cap)
    return eg_invalid(r->msg, sizeof r->msg, "through_seq",
                      "%" PRId64 " messages to copy, limit %d (--max-fork-messages)",
                      in->through_seq, cap);
  struct eg_fork_state *st = EG_ARENA_NEW(r->arena, struct eg_fork_state);
  if (!st) return EG_ENOMEM;
  st->in = in;
  st->new_id = in->new_session_id;
  if (!in->new_session_id[0]) {
    char *id = eg_arena_alloc(r->arena, EG_ULID_LEN + 1);
    if (!id) return EG_ENOMEM;
    eg_ulid_new(id);
    st->new_id = id;
  }
  st->stats = (eg_stats_rec)ENGRAM__STORAGE__V1__SESSION_STATS_RECORD__INIT;
  r->state = st;
  /* A retry finds its fork made: apply answers it without a copy. */
  e = eg_store_session_get(r->rtxn, r->tenant, st->new_id, &taken);
  if (e == EG_OK) {
    eg_session_rec_free(taken);
    st->taken = 1;
    return EG_OK;
  }
  if (e != EG_ENOTFOUND) return e;
  if ((e = eg_session_load(r, r->rtxn, in->session_id, &src))) return e;
  st->src = src;
  if (in->through_seq > src->message_count)
    return eg_invalid(r->msg, sizeof r->msg, "through_seq",
                      "%" PRId64 " is beyond the session's last message (%" PRId64 ")",
                      in->through_seq, src->message_count);
  if ((e = eg_fork_reseal(r, src->user_id, "session", src->session_id, st->new_id, "metadata",
                          &src->metadata_token, &st->metadata_token)))
    return e;
  if (src->n_metadata_hashes) {
    eg_kv_entry **md;
    size_t n;
    if ((e = eg_metadata_open(r, src->user_id, "session", src->session_id, &src->metadata_token,
                              eg_fork_entry_init, sizeof(Engram__V1__Session__MetadataEntry), &md,
                              &n)) ||
        (e = eg_session_terms(r, md, n, &st->metadata_hashes, &st->n_metadata_hashes)))
      return e;
  }
  /* A summary of more than the fork holds would speak of messages it
   * does not have. */
  if (src->summary_through_seq <= in->through_seq) {
    st->summary_through_seq = src->summary_through_seq;
    if ((e = eg_fork_reseal(r, src->user_id, "session", src->session_id, st->new_id, "summary",
                            &src->summary_token, &st->summary_token)))
      return e;
  }
  if (!(st->msgs = EG_ARENA_ARRAY(r->arena, eg_message_rec, (size_t)in->through_seq)))
    return EG_ENOMEM;
  /* From seq 1: the warm tier may have deleted the oldest already, so
   * the fork, like its source, may start later. */
  st->bytes = st->metadata_token.len + st->summary_token.len;
  struct eg_fork_copy fc = {.r = r, .st = st};
  if (strcmp(r->srv->cfg->index_messages, "true") == 0 && !src->exclude_from_search &&
      (e = eg_blind_ctx_of(r, &fc.ctx)))
    return e;
  e = eg_store_messages_scan(r->rtxn, r->tenant, src->session_id, 1, 0, eg_fork_visit, &fc);
  if (e == EG_OK) e = fc.err;
  return e;
}

/* Every token prepare sealed for the fork (of user) is still under a live
 * key (eg_field_sealed_live). */
static eg_err eg_fork_sealed_live(eg_req *r, const struct eg_fork_state *st, const char *user) {
  eg_err e;
  if ((e = eg_field_sealed_live(r, user, "session", st->new_id, &st->metadata_token)) ||
      (e = eg_field_sealed_live(r, user, "session", st->new_id, &st->summary_token)))
    return e;
  for (size_t i = 0; i < st->n; i++)
    if ((e = eg_field_sealed_live(r, user, "fork", st->new_id, &st->msgs[i].content_token)) ||
        (e = eg_field_sealed_live(r, user, "fork", st->new_id, &st->msgs[i].metadata_token)))
      return e;
  return EG_OK;
}

static eg_err eg_fork_apply(eg_req *r, eg_txn *t) {
  const struct eg_fork_state *st = r->state;
  const Engram__V1__ForkSessionRequest *in = st->in;
  eg_session_rec *old, *src;
  eg_err e = eg_store_session_get(t, r->tenant, st->new_id, &old);
  if (e == EG_OK) {
    if (eg_arena_defer(r->arena, eg_session_rec_free, old) != 0) return EG_ENOMEM;
    /* A retry of a fork that succeeded gets the fork as it is now. */
    if (strcmp(old->forked_from_session_id, in->session_id) == 0 &&
        old->forked_through_seq == in->through_seq)
      return eg_session_to_api(r, old, (Engram__V1__Session **)&r->resp);
    snprintf(r->msg, sizeof r->msg, "new_session_id: '%s' already exists", st->new_id);
    return EG_EEXIST;
  }
  if (e != EG_ENOTFOUND) return e;
  if (st->taken) {
    snprintf(r->msg, sizeof r->msg,
             "new_session_id: session '%s' was deleted while the fork was prepared; retry",
             st->new_id);
    return EG_EABORTED;
  }
  if ((e = eg_session_id_reusable(r, t, "new_session_id", st->new_id)) ||
      (e = eg_session_load(r, t, in->session_id, &src)))
    return e;
  /* Messages are never rewritten: the source prepare copied is still this
   * one unless it was deleted and made again under its id since. */
  if (src->create_time_us != st->src->create_time_us || strcmp(src->user_id, st->src->user_id)) {
    snprintf(r->msg, sizeof r->msg,
             "session_id: session '%s' was replaced while the fork was prepared; retry",
             in->session_id);
    return EG_EABORTED;
  }
  if ((e = eg_fork_sealed_live(r, st, src->user_id))) return e;
  for (size_t i = 0; i < st->n; i++)
    if ((e = eg_store_message_put(t, r->tenant, st->new_id, &st->msgs[i]))) return e;
  eg_session_rec rec = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  rec.session_id = (char *)st->new_id;
  rec.user_id = src->user_id;
  rec.agent_id = src->agent_id;
  rec.state = ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE;
  rec.metadata_token = st->metadata_token;
  rec.metadata_hashes = st->metadata_hashes;
  rec.n_metadata_hashes = st->n_metadata_hashes;
  rec.blind_key_id = st->n_metadata_hashes ? r->blind_key_used : 0;
  rec.create_time_us = rec.update_time_us = r->now_us;
  rec.expire_time_us = r->now_us + src->ttl_us;
  rec.ttl_us = src->ttl_us;
  rec.message_count = in->through_seq;
  rec.summary_token = st->summary_token;
  rec.summary_through_seq = st->summary_through_seq;
  rec.stats = (eg_stats_rec *)&st->stats;
  rec.forked_from_session_id = src->session_id;
  rec.forked_through_seq = in->through_seq;
  /* Same user, same language: prepare indexed the copies as the fork
   * indexes what it appends. */
  rec.exclude_from_search = src->exclude_from_search;
  rec.language = src->language;
  if ((e = eg_store_session_put(t, r->tenant, &rec, NULL))) return e;
  return eg_session_to_api(r, &rec, (Engram__V1__Session **)&r->resp);
}

/* ==== the table ============================================================= */

#define EG_SESSION_PATH(name) "/engram.v1.SessionService/" #name
#define EG_READ(name, req, fn) \
  {.path = EG_SESSION_PATH(name), .in = &req, .role = EG_ROLE_AGENT, .read = fn}
#define EG_WRITE(name, req, prep, app) \
  {.path = EG_SESSION_PATH(name), .in = &req, .role = EG_ROLE_AGENT, .prepare = prep, .apply = app}

const eg_method eg_session_methods[] = {
    EG_WRITE(CreateSession, engram__v1__create_session_request__descriptor, eg_create_prepare, eg_create_apply),
    EG_READ(GetSession, engram__v1__get_session_request__descriptor, eg_get_session),
    EG_READ(ListSessions, engram__v1__list_sessions_request__descriptor, eg_list_sessions),
    {.path = EG_SESSION_PATH(EndSession), .in = &engram__v1__end_session_request__descriptor,
     .role = EG_ROLE_AGENT, .prepare = eg_end_prepare, .apply = eg_end_apply, .prepare_reads = 1},
    {.path = EG_SESSION_PATH(UpdateSession), .in = &engram__v1__update_session_request__descriptor,
     .role = EG_ROLE_AGENT, .prepare = eg_update_prepare, .apply = eg_update_apply, .prepare_reads = 1},
    EG_WRITE(DeleteSession, engram__v1__delete_session_request__descriptor, eg_delete_prepare, eg_delete_apply),
    {.path = EG_SESSION_PATH(AppendMessages), .in = &engram__v1__append_messages_request__descriptor,
     .role = EG_ROLE_AGENT, .prepare = eg_append_prepare, .apply = eg_append_apply, .prepare_reads = 1},
    EG_READ(ListMessages, engram__v1__list_messages_request__descriptor, eg_list_messages),
    EG_READ(GetContext, engram__v1__get_context_request__descriptor, eg_get_context),
    {.path = EG_SESSION_PATH(UpdateSummary), .in = &engram__v1__update_summary_request__descriptor,
     .role = EG_ROLE_AGENT, .prepare = eg_summary_prepare, .apply = eg_summary_apply, .prepare_reads = 1},
    {.path = EG_SESSION_PATH(ForkSession), .in = &engram__v1__fork_session_request__descriptor,
     .role = EG_ROLE_AGENT, .prepare = eg_fork_prepare, .apply = eg_fork_apply, .prepare_reads = 1},
    EG_READ(SearchMessages, engram__v1__search_messages_request__descriptor, eg_search_messages),
    {.path = NULL},
};
