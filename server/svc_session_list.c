/*
 * engram.v1.SessionService ListSessions: a user's sessions (sessions_by_user,
 * newest created first), the tenant's (sessions_by_activity, newest
 * activity first) or those holding a metadata pair (session_terms, by id),
 * filtered. One call examines at most EG_LIST_EXAMINE_FACTOR x page_size
 * sessions, so its cost stays O(log n + page) however selective the
 * filters; past that it returns what it has and a token to go on.
 */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "engram/v1/session.pb-c.h"
#include "server/blind_key.h"
#include "server/convert.h"
#include "server/memory_svc.h"
#include "server/page_token.h"
#include "server/session_svc.h"
#include "server/session_terms.h"
#include "server/validate.h"

/* Sessions one call may examine per session of its page size. */
#define EG_LIST_EXAMINE_FACTOR 10

/* Which index a listing walks; the first byte of its page tokens, so a
 * token of one listing is refused by another. */
enum { EG_LS_USER = 'u', EG_LS_ACTIVITY = 'a', EG_LS_TERM = 'm' };

typedef Engram__V1__ListSessionsRequest eg_ls_req;

struct eg_list_sessions {
  eg_req *r;
  const eg_ls_req *in;
  Engram__V1__ListSessionsResponse *out;
  size_t want;
  size_t examined, examine_max;
  eg_reply_budget budget;
  unsigned states;                   /* bit per SessionState; 0: any */
  int64_t c_from, c_to, u_from, u_to; /* c_to, u_to: INT64_MAX when open */
  /* The metadata filters' tokens under each read key (server/blind_key.h;
   * a session is compared with its own key's); terms[0][0] drives a TERM
   * walk, which only one read key allows (a rotation's two: the other
   * walks, so that sessions under either key are found). */
  eg_blind_read keys;
  uint64_t *terms[2];
  size_t n_terms;
  /* The position after which the next page starts: mode byte, then an
   * index cursor (USER, ACTIVITY) or a session id (TERM). */
  uint8_t pos[1 + EG_SESSION_CURSOR_MAX];
  size_t pos_len;
  eg_err err;
};
_Static_assert(sizeof ((struct eg_list_sessions *)0)->pos <= EG_PAGE_POS_MAX,
               "a session listing's position fits a page token");

static int eg_ls_invalid(eg_req *r, const char *field, const char *what) {
  return eg_invalid(r->msg, sizeof r->msg, field, "%s", what);
}

/* Sessions remain past this page: the next starts after ls->pos. */
static int eg_ls_more(struct eg_list_sessions *ls) {
  eg_err e = eg_page_token_seal(ls->r, &ls->in->base, ls->pos, ls->pos_len,
                                &ls->out->next_page_token);
  if (e != EG_OK) ls->err = e;
  return 1;
}

static void eg_ls_mark(struct eg_list_sessions *ls, const void *p, size_t n) {
  memcpy(ls->pos + 1, p, n);
  ls->pos_len = 1 + n;
}

static int eg_u64_find(const uint64_t *v, size_t n, uint64_t x) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v[mid] == x) return 1;
    if (v[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

/* 1 if rec passes every filter. metadata_hashes is sorted (storage
 * refuses a record otherwise), so each metadata filter is a search. */
static int eg_ls_match(const struct eg_list_sessions *ls, const eg_session_rec *rec) {
  const eg_ls_req *in = ls->in;
  if (in->user_id[0] && strcmp(rec->user_id, in->user_id) != 0) return 0;
  if (in->agent_id[0] && strcmp(rec->agent_id, in->agent_id) != 0) return 0;
  if (ls->states && !(ls->states & 1u << eg_session_state_at(rec, ls->r->now_us))) return 0;
  if (rec->create_time_us < ls->c_from || rec->create_time_us >= ls->c_to) return 0;
  if (rec->update_time_us < ls->u_from || rec->update_time_us >= ls->u_to) return 0;
  if (!ls->n_terms) return 1;
  unsigned k = eg_blind_read_pick(&ls->keys, rec->blind_key_id);
  if (k >= ls->keys.n) return 0; /* under neither key: not expected */
  for (size_t i = 0; i < ls->n_terms; i++)
    if (!eg_u64_find(rec->metadata_hashes, rec->n_metadata_hashes, ls->terms[k][i])) return 0;
  return 1;
}

/* One session, at position p[0..n) of the walk. Returns nonzero to stop. */
static int eg_ls_consider(struct eg_list_sessions *ls, eg_session_rec *rec, const void *p,
                          size_t n) {
  if (eg_arena_defer(ls->r->arena, eg_session_rec_free, rec) != 0) return ls->err = EG_ENOMEM, 1;
  if (ls->examined == ls->examine_max) return eg_ls_more(ls);
  ls->examined++;
  if (!eg_ls_match(ls, rec)) {
    eg_ls_mark(ls, p, n);
    return 0;
  }
  if (ls->out->n_sessions == ls->want) return eg_ls_more(ls);
  Engram__V1__Session **slot = &ls->out->sessions[ls->out->n_sessions];
  if ((ls->err = eg_session_to_api(ls->r, rec, slot)) != EG_OK) return 1;
  if (!eg_reply_budget_take(&ls->budget, &(*slot)->base)) return eg_ls_more(ls);
  ls->out->n_sessions++;
  eg_ls_mark(ls, p, n);
  return 0;
}

static int eg_ls_visit_user(void *arg, eg_session_rec *rec, const eg_session_cursor *cur) {
  struct eg_list_sessions *ls = arg;
  /* Newest created first: nothing further is recent enough. */
  if (rec->create_time_us < ls->c_from) {
    eg_session_rec_free(rec);
    return 1;
  }
  return eg_ls_consider(ls, rec, cur->buf, cur->len);
}

static int eg_ls_visit_activity(void *arg, eg_session_rec *rec, const eg_session_cursor *cur) {
  struct eg_list_sessions *ls = arg;
  /* Newest activity first, and update_time <= activity: nothing further
   * was updated recently enough. */
  if (eg_session_cursor_time_us(cur) < ls->u_from) {
    eg_session_rec_free(rec);
    return 1;
  }
  return eg_ls_consider(ls, rec, cur->buf, cur->len);
}

static int eg_ls_visit_term(void *arg, const char *session_id) {
  struct eg_list_sessions *ls = arg;
  eg_session_rec *rec;
  /* The index is written with the record in one txn: a term without its
   * session is corruption. */
  eg_err e = eg_store_session_get(ls->r->rtxn, ls->r->tenant, session_id, &rec);
  if (e != EG_OK) return ls->err = e == EG_ENOTFOUND ? EG_ECORRUPT : e, 1;
  return eg_ls_consider(ls, rec, session_id, strlen(session_id));
}

/* The filters into ls. */
static eg_err eg_ls_filters(struct eg_list_sessions *ls) {
  eg_req *r = ls->r;
  const eg_ls_req *in = ls->in;
  eg_err e;
  if ((e = eg_validate_id("agent_id", in->agent_id, 0, r->msg, sizeof r->msg))) return e;
  /* The wire walk caps both counts; the checks keep the contract local. */
  if (in->n_states > EG_LIST_SESSIONS_STATES_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "states", "more than %d values", EG_LIST_SESSIONS_STATES_MAX);
  for (size_t i = 0; i < in->n_states; i++) {
    int s = (int)in->states[i];
    if (s != ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE &&
        s != ENGRAM__V1__SESSION_STATE__SESSION_STATE_ENDED &&
        s != ENGRAM__V1__SESSION_STATE__SESSION_STATE_EXPIRED)
      return eg_invalid(r->msg, sizeof r->msg, "states",
                        "%d is not a session state (ACTIVE, ENDED or EXPIRED)", s);
    ls->states |= 1u << s;
  }
  if ((e = eg_time_us(r, "create_time_from", in->create_time_from, &ls->c_from)) ||
      (e = eg_time_us(r, "create_time_to", in->create_time_to, &ls->c_to)) ||
      (e = eg_time_us(r, "update_time_from", in->update_time_from, &ls->u_from)) ||
      (e = eg_time_us(r, "update_time_to", in->update_time_to, &ls->u_to)))
    return e;
  if (!in->create_time_to) ls->c_to = INT64_MAX;
  if (!in->update_time_to) ls->u_to = INT64_MAX;
  if (ls->c_to <= ls->c_from) return eg_ls_invalid(r, "create_time_to", "must be after create_time_from");
  if (ls->u_to <= ls->u_from) return eg_ls_invalid(r, "update_time_to", "must be after update_time_from");
  if (in->n_metadata_equals > EG_LIST_SESSIONS_METADATA_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "metadata_equals", "more than %d values",
                      EG_LIST_SESSIONS_METADATA_MAX);
  if (!in->n_metadata_equals) return EG_OK;
  if ((e = eg_blind_read_ctxs(r, r->rtxn, &ls->keys))) return e;
  for (unsigned k = 0; k < ls->keys.n; k++)
    if (!(ls->terms[k] = EG_ARENA_ARRAY(r->arena, uint64_t, in->n_metadata_equals)))
      return EG_ENOMEM;
  for (size_t i = 0; i < in->n_metadata_equals; i++) {
    const Engram__V1__ListSessionsRequest__MetadataEquals *m = in->metadata_equals[i];
    char field[48];
    snprintf(field, sizeof field, "metadata_equals[%zu].key", i);
    if (!m->key[0]) return eg_ls_invalid(r, field, "required");
    /* No stored pair is longer, and it bounds the bytes hashed. */
    size_t len = strlen(m->key) + strlen(m->value);
    if ((int64_t)len > r->srv->cfg->max_metadata_bytes)
      return eg_invalid(r->msg, sizeof r->msg, field, "%zu bytes of key and value, limit %lld",
                        len, (long long)r->srv->cfg->max_metadata_bytes);
    for (unsigned k = 0; k < ls->keys.n; k++)
      if ((e = eg_session_term(r, ls->keys.ctx[k], m->key, m->value, &ls->terms[k][i]))) return e;
  }
  ls->n_terms = in->n_metadata_equals;
  return EG_OK;
}

/* A page token into *pos (the walk's start, mode byte first). USER and
 * ACTIVITY tokens hold an index cursor (8 bytes of time, then the id),
 * TERM tokens an id. The token binds the request, so the mode matches
 * unless the server changed how it picks modes: the checks stay, since
 * storage checks only a cursor's length. */
static eg_err eg_ls_token_parse(struct eg_list_sessions *ls) {
  eg_req *r = ls->r;
  char sid[EG_STORE_ID_MAX + 1], ignored[256];
  size_t n, id_at = ls->pos[0] == EG_LS_TERM ? 1 : 9;
  uint8_t mode = ls->pos[0];
  eg_err e = eg_page_token_open(r, &ls->in->base, ls->pos, sizeof ls->pos, &n);
  if (e != EG_OK) return e;
  if (n > id_at && ls->pos[0] == mode && !memchr(ls->pos + id_at, 0, n - id_at)) {
    memcpy(sid, ls->pos + id_at, n - id_at);
    sid[n - id_at] = '\0';
    ls->pos_len = n;
    if (eg_validate_id("session_id", sid, 1, ignored, sizeof ignored) == EG_OK) return EG_OK;
  }
  return eg_ls_invalid(r, "page_token", "not a token this server issued for this listing");
}

eg_err eg_list_sessions(eg_req *r, const ProtobufCMessage *msg) {
  const eg_ls_req *in = (const void *)msg;
  struct eg_list_sessions ls = {.r = r, .in = in};
  eg_err e;
  if ((e = eg_validate_id("user_id", in->user_id, 0, r->msg, sizeof r->msg)) ||
      (e = eg_page_size(r, "page_size", in->page_size, &ls.want)) || (e = eg_ls_filters(&ls)))
    return e;
  ls.examine_max = ls.want * EG_LIST_EXAMINE_FACTOR;
  ls.pos[0] = ls.n_terms && ls.keys.n == 1 ? EG_LS_TERM
              : in->user_id[0]                ? EG_LS_USER
                                              : EG_LS_ACTIVITY;
  ls.pos_len = 1;
  if (in->page_token[0] && (e = eg_ls_token_parse(&ls))) return e;
  eg_reply_budget_init(&ls.budget, r);
  ls.out = EG_ARENA_NEW(r->arena, Engram__V1__ListSessionsResponse);
  if (!ls.out) return EG_ENOMEM;
  engram__v1__list_sessions_response__init(ls.out);
  ls.out->sessions = EG_ARENA_ARRAY(r->arena, Engram__V1__Session *, ls.want);
  if (!ls.out->sessions) return EG_ENOMEM;
  eg_session_cursor after = {.len = ls.pos_len - 1};
  memcpy(after.buf, ls.pos + 1, after.len);
  if (ls.pos[0] == EG_LS_TERM) {
    char after_id[EG_STORE_ID_MAX + 1];
    memcpy(after_id, after.buf, after.len);
    after_id[after.len] = '\0';
    e = eg_store_session_terms_scan(r->rtxn, r->tenant, ls.terms[0][0], after.len ? after_id : NULL,
                                    eg_ls_visit_term, &ls);
  } else if (ls.pos[0] == EG_LS_USER) {
    /* Without a token, start just below create_time_to: the index is
     * ordered by create time, so the sessions after it are never read. A
     * NUL id sorts below every real one at that time. */
    if (!after.len && in->create_time_to) {
      for (int i = 0; i < 8; i++) after.buf[i] = (uint8_t)((uint64_t)ls.c_to >> (56 - 8 * i));
      after.buf[8] = 0;
      after.len = 9;
    }
    e = eg_store_sessions_scan(r->rtxn, r->tenant, in->user_id, after.len ? &after : NULL,
                               eg_ls_visit_user, &ls);
  } else {
    e = eg_store_sessions_by_activity_scan(r->rtxn, r->tenant, after.len ? &after : NULL,
                                           eg_ls_visit_activity, &ls);
  }
  if (e == EG_EINVAL) return eg_ls_invalid(r, "page_token", "not a token this server issued for this listing");
  if (e == EG_OK) e = ls.err;
  r->resp = &ls.out->base;
  return e;
}
