/*
 * engram.v1.SessionService/SearchMessages: keyword (BM25) and embedding
 * search over one user's messages, or over the tenant's, on the message
 * keyword index (storage/message_index.h). A read: it runs on the worker,
 * in its read txn, and decrypts only the results.
 *
 * How a search goes, and what bounds it:
 *   1. The query is tokenized as the index was (EG_TOKENIZER_VERSION, the
 *      request's language) into at most EG_MSEARCH_TERMS_MAX distinct
 *      blind terms (more: INVALID_ARGUMENT).
 *      None (only stop words, say) and no embedding: INVALID_ARGUMENT.
 *   2. Each term's postings are read newest first across the users read
 *      (eg_store_message_postings merges their ranges): the users of the
 *      given session_ids that are in the search (those sessions looked up
 *      first), else user_id's, else every user of the tenant holding the
 *      word (at most EG_MESSAGE_MERGE_USERS_MAX; past it `truncated`). The
 *      time range narrows the read. --max-search-postings, split evenly
 *      across the terms, bounds the postings read per term: every posting
 *      read counts, whether or not the role and session id filters then
 *      keep it (past it: `truncated`; the newest were read). While a
 *      blind-index rotation runs a term is read under both read keys
 *      (lined up, eg_text_terms_lined), its budget and df spanning both.
 *      Each posting read costs the call at most ~300 bytes of arena (~200
 *      with 26-byte session ids): its candidate entry and position, the
 *      map's slots, create time, bm25 part and rank entry, growth's copies
 *      included.
 *      A candidate is a
 *      message holding a query word, its bm25 summed over the terms:
 *        idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
 *        bm25 += idf * tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)),
 *      k1 1.2, b 0.75, N and avgdl (words / N) from the scope's index stats
 *      (the user's, or the tenant's), df the term's postings read (those
 *      of the users read, in the time range, up to the cap).
 *   3. Each distinct session of the candidates is looked up once (a map in
 *      the arena): one that is gone (retired, being purged), excluded from
 *      search, another user's, or failing agent_id or session_states drops
 *      its messages.
 *   4. score = the normalized weights . (bm25 / best bm25, cosine clamped
 *      to [0, 1] for a message whose embedding has the query's dimension,
 *      0.5 ^ (age / half life)); the best offset + top_k are kept (at most
 *      EG_MSEARCH_RESULTS_MAX; ties: newer first, then session id, seq).
 *      With an embedding, candidates are loaded best keyword+recency first
 *      and loading stops once none left can reach the kept ones.
 *   5. The kept page is loaded and decrypted into the reply, which stops
 *      at --max-reply-bytes (then next_page_token resumes there). A
 *      posting whose message is gone (the index should never hold one) is
 *      skipped, here and in step 4, and logged once per call.
 * Without query words, an embedding ranks the newest messages of the
 * sessions in scope (the given session_ids; else the user's sessions,
 * newest first; else the tenant's, most recently active first): at most
 * --max-search-postings sessions and messages examined in all.
 *
 * The page token (server/page_token.h: bound to every other field of the
 * request) holds the offset and the first page's time, which every later
 * page uses for recency and as an upper bound on create time: messages
 * appended since do not shift the pages.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "engram/v1/session.pb-c.h"
#include "server/blind_key.h"
#include "server/convert.h"
#include "server/memory_score.h"
#include "server/memory_svc.h"
#include "server/page_token.h"
#include "server/session_svc.h"
#include "server/text_terms.h"
#include "server/tokenizer.h"
#include "server/validate.h"

/* Limits and defaults (documented in session.proto and the README). */
#define EG_MSEARCH_QUERY_MAX 4096
#define EG_MSEARCH_TERMS_MAX 64
#define EG_MSEARCH_RESULTS_MAX 1000 /* offset + top_k: how deep paging reaches */
#define EG_MSEARCH_HALF_LIFE_DEFAULT_S (7.0 * 86400.0)
#define EG_BM25_K1 1.2
#define EG_BM25_B 0.75

/* A candidate's map position: session id | seq BE. Ids hold no byte below
 * '-', and a seq's first byte is 0, so positions sort by session id, then
 * seq: the tie order of results. */
#define EG_MSEARCH_POS_MAX (EG_ID_MAX + 8)
_Static_assert(EG_MSEARCH_POS_MAX <= sizeof(((eg_scored *)0)->pos), "a message position fits eg_scored");

/* A session's verdict in the sessions map (eg_pmap_ent.count). */
enum { EG_SESS_IN = 1, EG_SESS_OUT = 2 };

typedef struct {
  eg_req *r;
  const Engram__V1__SearchMessagesRequest *in;
  const char *user_id; /* NULL: the tenant */
  int64_t from_us, to_us; /* to_us: the request's bound or the first page's time */
  unsigned role_mask, state_mask; /* 0: any */
  const float *q;
  size_t dim;
  eg_weights w;
  double half_life_s;
  int64_t now_us; /* the first page's: recency */
  size_t want;    /* offset + top_k (+ 1 to know a next page exists) */
  size_t budget;  /* postings per term, or examined in all (no words) */
  int truncated;
  /* The users whose postings are read (sorted, distinct); all_users: the
   * tenant's (users unused). */
  const char **users;
  size_t n_users;
  int all_users;
  size_t orphans; /* postings whose message is gone: skipped */
  /* Candidates: position -> entry (count: terms matched; idf: bm25). */
  eg_pmap cands;
  int64_t *cand_us; /* create time, parallel to cands.ents */
  size_t cand_cap;
  /* Sessions: id -> entry (count: EG_SESS_*), their users parallel. */
  eg_pmap sess;
  const char **sess_user;
  size_t sess_cap;
  /* The term being read: its postings so far (under every read key) and
   * their tf parts. */
  uint32_t *touched;
  double *part;
  size_t n_touched, touched_cap;
  size_t df;
  double avgdl;
  double best; /* the best bm25 among the candidates in the search */
  eg_topk top;
  eg_err err;
} eg_msearch;

/* eg_arena_grow as an eg_err. */
static eg_err eg_grow(eg_arena *a, void **arr, size_t *cap, size_t need, size_t elem) {
  return eg_arena_grow(a, arr, cap, need, elem) ? EG_ENOMEM : EG_OK;
}

/* ==== the request =========================================================== */

static int eg_sid_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The weights (defaults when unset), scaled to sum to 1: keyword, vector,
 * importance (always 0: messages have none), recency. */
static eg_err eg_msearch_weights(eg_req *r, const Engram__V1__MessageSearchWeights *w, int with_vec,
                                 eg_weights *out) {
  const float def[4] = {with_vec ? 0.35f : 0.7f, with_vec ? 0.35f : 0, 0, 0.3f};
  if (!w) return eg_weights_normalize(def, out) == 0 ? EG_OK : EG_EINVAL;
  const float v[4] = {w->keyword, w->vector, 0, w->recency};
  static const char *const names[4] = {"weights.keyword", "weights.vector", NULL, "weights.recency"};
  for (int i = 0; i < 4; i++)
    if (names[i] && (!isfinite(v[i]) || v[i] < 0))
      return eg_invalid(r->msg, sizeof r->msg, names[i], "must be finite and >= 0");
  if (eg_weights_normalize(v, out) != 0)
    return eg_invalid(r->msg, sizeof r->msg, "weights", "must not all be 0");
  return EG_OK;
}

/* The page token's position: offset u32 BE | first page's time i64 BE. */
static eg_err eg_msearch_token(eg_req *r, const ProtobufCMessage *in, uint32_t offset,
                               int64_t first_us, char **out) {
  uint8_t b[12];
  _Static_assert(sizeof b <= EG_PAGE_POS_MAX, "a search position fits a page token");
  for (int i = 0; i < 4; i++) b[i] = (uint8_t)(offset >> (24 - 8 * i));
  for (int i = 0; i < 8; i++) b[4 + i] = (uint8_t)((uint64_t)first_us >> (56 - 8 * i));
  return eg_page_token_seal(r, in, b, sizeof b, out);
}

static eg_err eg_msearch_token_parse(eg_req *r, const ProtobufCMessage *in, uint32_t *offset,
                                     int64_t *first_us) {
  uint8_t b[12];
  size_t n;
  eg_err e = eg_page_token_open(r, in, b, sizeof b, &n);
  if (e != EG_OK) return e;
  if (n != sizeof b) return eg_invalid(r->msg, sizeof r->msg, "page_token", "not a token of this search");
  uint64_t t = 0;
  *offset = 0;
  for (int i = 0; i < 4; i++) *offset = *offset << 8 | b[i];
  for (int i = 0; i < 8; i++) t = t << 8 | b[4 + i];
  *first_us = (int64_t)t;
  if (*offset >= EG_MSEARCH_RESULTS_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "page_token", "not a token of this search");
  return EG_OK;
}

/* Checks the request into s; *offset is where the page starts. */
static eg_err eg_msearch_check(eg_req *r, const Engram__V1__SearchMessagesRequest *in, eg_msearch *s,
                               size_t *offset, size_t *k) {
  char field[64];
  eg_err e;
  float *q;
  if ((e = eg_validate_id("user_id", in->user_id, 0, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("agent_id", in->agent_id, 0, r->msg, sizeof r->msg)))
    return e;
  s->user_id = in->user_id[0] ? in->user_id : NULL;
  size_t qlen = strlen(in->query);
  if (qlen > EG_MSEARCH_QUERY_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "query", "%zu bytes, limit %d", qlen, EG_MSEARCH_QUERY_MAX);
  if (!qlen && !in->n_embedding)
    return eg_invalid(r->msg, sizeof r->msg, "query", "a query or an embedding (or both) is required");
  if (in->top_k < 0 || in->top_k > EG_TOP_K_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "top_k", "must be 1..%d, or 0 for %d (got %d)",
                      EG_TOP_K_MAX, EG_TOP_K_DEFAULT, in->top_k);
  *k = in->top_k ? (size_t)in->top_k : EG_TOP_K_DEFAULT;
  /* The wire walk already refused more than EG_SEARCH_SESSION_IDS_MAX /
   * EG_SEARCH_STATES_MAX values; each is checked here. */
  for (size_t i = 0; i < in->n_session_ids; i++) {
    snprintf(field, sizeof field, "session_ids[%zu]", i);
    if ((e = eg_validate_id(field, in->session_ids[i], 1, r->msg, sizeof r->msg))) return e;
  }
  for (size_t i = 0; i < in->n_roles; i++) {
    if (in->roles[i] <= ENGRAM__V1__ROLE__ROLE_UNSPECIFIED || in->roles[i] > ENGRAM__V1__ROLE__ROLE_TOOL) {
      snprintf(field, sizeof field, "roles[%zu]", i);
      return eg_invalid(r->msg, sizeof r->msg, field, "must be USER, ASSISTANT, SYSTEM or TOOL (got %d)",
                        (int)in->roles[i]);
    }
    s->role_mask |= 1u << in->roles[i];
  }
  for (size_t i = 0; i < in->n_session_states; i++) {
    int st = in->session_states[i];
    if (st <= ENGRAM__V1__SESSION_STATE__SESSION_STATE_UNSPECIFIED ||
        st > ENGRAM__V1__SESSION_STATE__SESSION_STATE_EXPIRED) {
      snprintf(field, sizeof field, "session_states[%zu]", i);
      return eg_invalid(r->msg, sizeof r->msg, field, "must be ACTIVE, ENDED or EXPIRED (got %d)", st);
    }
    s->state_mask |= 1u << st;
  }
  if ((e = eg_time_us(r, "create_time_from", in->create_time_from, &s->from_us)) ||
      (e = eg_time_us(r, "create_time_to", in->create_time_to, &s->to_us)))
    return e;
  if (s->to_us && s->to_us <= s->from_us)
    return eg_invalid(r->msg, sizeof r->msg, "create_time_to", "must be after create_time_from");
  float qnorm; /* eg_msearch_cosine recomputes it in double */
  if ((e = eg_embedding_check(r, "embedding", in->embedding, in->n_embedding, &q, &qnorm)) ||
      (e = eg_msearch_weights(r, in->weights, in->n_embedding > 0, &s->w)) ||
      (e = eg_check_unit(r, "min_score", in->min_score)))
    return e;
  s->q = q;
  s->dim = in->n_embedding;
  if (!isfinite(in->recency_half_life_seconds) || in->recency_half_life_seconds < 0)
    return eg_invalid(r->msg, sizeof r->msg, "recency_half_life_seconds", "must be finite and >= 0");
  s->half_life_s = in->recency_half_life_seconds > 0 ? in->recency_half_life_seconds
                                                     : EG_MSEARCH_HALF_LIFE_DEFAULT_S;
  if (eg_lang_check(in->language) != 0)
    return eg_invalid(r->msg, sizeof r->msg, "language", "not a BCP 47 tag (at most %d bytes)",
                      EG_LANG_MAX);
  uint32_t off = 0;
  s->now_us = r->now_us;
  if (in->page_token[0] && (e = eg_msearch_token_parse(r, &in->base, &off, &s->now_us))) return e;
  *offset = off;
  /* The last page reachable ends at EG_MSEARCH_RESULTS_MAX. */
  if (*offset + *k > EG_MSEARCH_RESULTS_MAX) *k = EG_MSEARCH_RESULTS_MAX - *offset;
  /* Pages after the first see what the first saw, and nothing newer. */
  if (!s->to_us || s->to_us > s->now_us + 1) s->to_us = s->now_us + 1;
  if (s->to_us <= s->from_us) s->to_us = s->from_us + 1;
  return EG_OK;
}

/* ==== sessions ============================================================== */

/* 1 if id[0..len) is among the request's session_ids (or none are given). */
static int eg_msearch_sid_wanted(const eg_msearch *s, const char *id, size_t len) {
  const Engram__V1__SearchMessagesRequest *in = s->in;
  if (!in->n_session_ids) return 1;
  size_t lo = 0, hi = in->n_session_ids;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const char *x = in->session_ids[mid];
    int c = strncmp(x, id, len);
    if (c == 0) c = x[len] != 0;
    if (c == 0) return 1;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

/* Whether session id[0..len) is in the search (looked up once per call):
 * *idx gets its entry in s->sess. rec, when the caller has it, saves the
 * lookup. */
static eg_err eg_msearch_session(eg_msearch *s, const char *id, size_t len, const eg_session_rec *rec,
                                 int *in_search, uint32_t *idx, int64_t span[2]) {
  eg_req *r = s->r;
  size_t before = s->sess.n;
  eg_err e = eg_pmap_add(&s->sess, (const uint8_t *)id, len, idx);
  if (e) return e;
  eg_pmap_ent *ent = &s->sess.ents[*idx];
  if (s->sess.n == before) {
    /* Looked up already: only eg_msearch_users asks for spans, once each. */
    if (span) span[0] = span[1] = 0;
    return *in_search = ent->count == EG_SESS_IN, EG_OK;
  }
  if ((e = eg_grow(r->arena, (void **)&s->sess_user, &s->sess_cap, s->sess.n, sizeof *s->sess_user)))
    return e;
  eg_session_rec *got = NULL;
  ent->count = EG_SESS_OUT;
  if (!rec) {
    char *sid = eg_arena_strndup(r->arena, id, len);
    if (!sid) return EG_ENOMEM;
    e = eg_store_session_get(r->rtxn, r->tenant, sid, &got);
    if (e == EG_ENOTFOUND) {
      if (span) span[0] = span[1] = 0;
      return *in_search = 0, EG_OK;
    }
    if (e) return e;
    rec = got;
  }
  int ok = !rec->exclude_from_search && (!s->user_id || strcmp(rec->user_id, s->user_id) == 0) &&
           (!s->in->agent_id[0] || strcmp(rec->agent_id, s->in->agent_id) == 0) &&
           (!s->state_mask || (s->state_mask & (1u << eg_session_state_at(rec, r->now_us))));
  if (span) {
    /* Its messages' create times (first and last; 0: not known): a message
     * is stamped at append, and a fork's copies keep theirs, as do the
     * fork's stats. */
    span[0] = ok && rec->stats ? rec->stats->first_message_time_us : 0;
    span[1] = ok && rec->stats ? rec->stats->last_message_time_us : 0;
  }
  const char *user = ok ? eg_arena_strndup(r->arena, rec->user_id, strlen(rec->user_id)) : "";
  if (got) eg_session_rec_free(got);
  if (!user) return EG_ENOMEM;
  s->sess_user[*idx] = user;
  if (ok) ent->count = EG_SESS_IN;
  *in_search = ok;
  return EG_OK;
}

/* ==== keyword candidates ==================================================== */

static size_t eg_msearch_pos(uint8_t *pos, const char *sid, size_t len, uint64_t seq) {
  memcpy(pos, sid, len);
  for (int i = 0; i < 8; i++) pos[len + i] = (uint8_t)(seq >> (56 - 8 * i));
  return len + 8;
}

static int eg_msearch_posting(void *arg, const eg_message_posting *p) {
  eg_msearch *s = arg;
  eg_req *r = s->r;
  uint8_t pos[EG_MSEARCH_POS_MAX];
  uint32_t idx;
  if (s->df == s->budget) return s->truncated = 1, 1;
  s->df++;
  if (s->role_mask && (p->role < 0 || p->role > 31 || !(s->role_mask & (1u << p->role)))) return 0;
  if (p->session_len > EG_ID_MAX || !eg_msearch_sid_wanted(s, p->session_id, p->session_len)) return 0;
  size_t before = s->cands.n;
  size_t len = eg_msearch_pos(pos, p->session_id, p->session_len, p->seq);
  if ((s->err = eg_pmap_add(&s->cands, pos, len, &idx))) return 1;
  if (s->cands.n != before) {
    if ((s->err = eg_grow(r->arena, (void **)&s->cand_us, &s->cand_cap, s->cands.n, sizeof *s->cand_us)))
      return 1;
    s->cand_us[idx] = p->create_us;
  }
  if (s->n_touched == s->touched_cap) {
    size_t cap = s->touched_cap;
    if ((s->err = eg_grow(r->arena, (void **)&s->touched, &cap, s->n_touched + 1, sizeof *s->touched)) ||
        (s->err = eg_grow(r->arena, (void **)&s->part, &s->touched_cap, s->n_touched + 1, sizeof *s->part)))
      return 1;
  }
  double tf = p->tf, dl = p->words;
  s->touched[s->n_touched] = idx;
  s->part[s->n_touched++] =
      tf * (EG_BM25_K1 + 1) / (tf + EG_BM25_K1 * (1 - EG_BM25_B + EG_BM25_B * dl / s->avgdl));
  s->cands.ents[idx].count++;
  return 0;
}

/* The users whose postings the search reads into s: with session_ids, the
 * users of those of them in the search (each looked up once, at most
 * EG_SEARCH_SESSION_IDS_MAX), and the time range narrowed to their
 * messages' (so an old session of a busy user is reached: its user's newer
 * postings are not read); else the user of user_id; else all. */
static eg_err eg_msearch_users(eg_msearch *s) {
  const Engram__V1__SearchMessagesRequest *in = s->in;
  if (!in->n_session_ids) {
    s->all_users = !s->user_id;
    s->users = &s->user_id;
    s->n_users = s->user_id ? 1 : 0;
    return EG_OK;
  }
  const char **users = EG_ARENA_ARRAY(s->r->arena, const char *, in->n_session_ids);
  if (!users) return EG_ENOMEM;
  size_t n = 0;
  int64_t lo = INT64_MAX, hi = 0;
  int spans = 1; /* every session in the search has a known span */
  for (size_t i = 0; i < in->n_session_ids; i++) {
    int ok;
    uint32_t si;
    int64_t span[2];
    eg_err e = eg_msearch_session(s, in->session_ids[i], strlen(in->session_ids[i]), NULL, &ok, &si,
                                  span);
    if (e) return e;
    if (!ok) continue;
    users[n++] = s->sess_user[si];
    if (span[0] <= 0 || span[1] < span[0]) spans = 0;
    if (span[0] < lo) lo = span[0];
    if (span[1] > hi) hi = span[1];
  }
  if (n && spans) {
    if (lo > s->from_us) s->from_us = lo;
    if (!s->to_us || hi + 1 < s->to_us) s->to_us = hi + 1;
    /* An empty range: nothing of those sessions in the request's. */
    if (s->to_us <= s->from_us) n = 0;
  }
  qsort(users, n, sizeof *users, eg_sid_cmp);
  s->n_users = 0;
  for (size_t i = 0; i < n; i++)
    if (!s->n_users || strcmp(users[i], users[s->n_users - 1]) != 0) users[s->n_users++] = users[i];
  s->users = users;
  return EG_OK;
}

/* Reads the postings of nt words into s->cands, each candidate's bm25 in
 * its entry's idf field: terms[k][0..nt) are the words' tokens under read
 * key k < n_keys, lined up (eg_text_terms_lined). A word's budget and df
 * span its postings under every key (a message's are all under its own
 * key), so a blind-index rotation changes neither. */
static eg_err eg_msearch_keywords(eg_msearch *s, uint64_t *const *terms, unsigned n_keys,
                                  size_t nt) {
  eg_req *r = s->r;
  uint64_t n_docs, words;
  eg_err e = eg_store_message_index_stats(r->rtxn, r->tenant, s->user_id, &n_docs, &words);
  if (!e) e = eg_msearch_users(s);
  if (e) return e;
  s->avgdl = n_docs ? (double)words / (double)n_docs : 1;
  if (!(s->avgdl > 0)) s->avgdl = 1;
  s->budget = (size_t)r->srv->cfg->max_search_postings / nt;
  if (!s->budget) s->budget = 1;
  for (size_t i = 0; i < nt; i++) {
    /* In the team view each user holding the word is a seek before any
     * of its postings: at most a budget of them per word, the users an
     * earlier key's read sought included (as the postings, which
     * eg_msearch_posting stops at the budget), none once the postings
     * are spent. */
    size_t sought = 0;
    s->df = s->n_touched = 0;
    for (unsigned k = 0; k < n_keys; k++) {
      int cut;
      size_t read;
      size_t left = s->budget > sought && s->df < s->budget ? s->budget - sought : 0;
      size_t max_users = left < EG_MESSAGE_MERGE_USERS_MAX ? left : EG_MESSAGE_MERGE_USERS_MAX;
      e = eg_store_message_postings(r->rtxn, r->tenant, s->all_users ? NULL : s->users, s->n_users,
                                    max_users, terms[k][i], s->from_us, s->to_us,
                                    eg_msearch_posting, s, &cut, &read);
      if (e == EG_OK) e = s->err;
      if (e) return e;
      if (cut) s->truncated = 1;
      sought += read;
    }
    double n = (double)n_docs > (double)s->df ? (double)n_docs : (double)s->df;
    double idf = log(1 + (n - (double)s->df + 0.5) / ((double)s->df + 0.5));
    for (size_t j = 0; j < s->n_touched; j++) s->cands.ents[s->touched[j]].idf += idf * s->part[j];
  }
  return EG_OK;
}

/* A candidate's keyword + recency score (no vector part yet). */
typedef struct {
  uint32_t idx;
  float keyword, recency, base;
} eg_mcand;

static int eg_mcand_cmp(const void *a, const void *b) {
  const eg_mcand *x = a, *y = b;
  return x->base > y->base ? -1 : x->base < y->base;
}

/* The cosine of the query with a message's embedding, clamped to [0, 1];
 * 0 when it has none of the query's dimension. */
/* In double: any embedding the append accepted (finite, float norm > 0)
 * gets its cosine, however large or small its values (float sums of
 * squares overflow past ~1e19 and underflow below ~1e-19). */
static float eg_msearch_cosine(const eg_msearch *s, const eg_message_rec *rec) {
  if (!s->q || rec->embedding.len != s->dim * sizeof(float)) return 0;
  double dot = 0, nq = 0, nm = 0;
  float x;
  for (size_t i = 0; i < s->dim; i++) {
    /* Bytes of any alignment. */
    memcpy(&x, rec->embedding.data + i * sizeof x, sizeof x);
    dot += (double)s->q[i] * x;
    nq += (double)s->q[i] * s->q[i];
    nm += (double)x * x;
  }
  if (!(nq > 0) || !(nm > 0)) return 0;
  double c = dot / (sqrt(nq) * sqrt(nm));
  return c > 0 ? (float)(c < 1 ? c : 1) : 0;
}

/* Splits a candidate position into session id (an arena string) and seq. */
static eg_err eg_msearch_unpos(eg_req *r, const uint8_t *pos, size_t len, char **sid, uint64_t *seq) {
  if (len < 9) return EG_ECORRUPT;
  *seq = 0;
  for (int i = 0; i < 8; i++) *seq = *seq << 8 | pos[len - 8 + i];
  *sid = eg_arena_strndup(r->arena, (const char *)pos, len - 8);
  return *sid ? EG_OK : EG_ENOMEM;
}

static void eg_msearch_offer(eg_msearch *s, const eg_scored *c) {
  if (c->score >= s->in->min_score) eg_topk_offer(&s->top, c);
}

/* Scores the candidates whose session is in the search into s->top. */
static eg_err eg_msearch_rank(eg_msearch *s) {
  eg_req *r = s->r;
  eg_mcand *c = EG_ARENA_ARRAY(r->arena, eg_mcand, s->cands.n ? s->cands.n : 1);
  size_t n = 0;
  eg_err e;
  if (!c) return EG_ENOMEM;
  for (size_t i = 0; i < s->cands.n; i++) {
    const eg_pmap_ent *ent = &s->cands.ents[i];
    int in;
    uint32_t si;
    if ((e = eg_msearch_session(s, (const char *)ent->pos, ent->len - 8, NULL, &in, &si, NULL)))
      return e;
    if (!in) continue;
    c[n++].idx = (uint32_t)i;
    if (ent->idf > s->best) s->best = ent->idf;
  }
  for (size_t i = 0; i < n; i++) {
    c[i].keyword = s->best > 0 ? (float)(s->cands.ents[c[i].idx].idf / s->best) : 0;
    c[i].recency = eg_recency((double)(s->now_us - s->cand_us[c[i].idx]) / 1e6, s->half_life_s);
    c[i].base = eg_hybrid_score(&s->w, c[i].keyword, 0, 0, c[i].recency);
  }
  /* With an embedding, a candidate's score is at most base + the vector
   * weight: best base first, and stop once none left can be kept. */
  if (s->q) qsort(c, n, sizeof *c, eg_mcand_cmp);
  for (size_t i = 0; i < n; i++) {
    const eg_pmap_ent *ent = &s->cands.ents[c[i].idx];
    eg_scored sc = {.keyword = c[i].keyword, .recency = c[i].recency, .score = c[i].base,
                    .create_us = s->cand_us[c[i].idx], .pos_len = ent->len};
    memcpy(sc.pos, ent->pos, ent->len);
    if (s->q) {
      float ub = c[i].base + s->w.vector;
      if (ub < s->in->min_score || (s->top.n == s->top.k && s->top.items[0].score > ub)) break;
      char *sid;
      uint64_t seq;
      eg_message_rec *rec;
      if ((e = eg_msearch_unpos(r, ent->pos, ent->len, &sid, &seq))) return e;
      e = eg_store_message_get(r->rtxn, r->tenant, sid, seq, &rec);
      if (e == EG_ENOTFOUND) {
        s->orphans++;
        continue;
      }
      if (e) return e;
      sc.vector = eg_msearch_cosine(s, rec);
      engram__storage__v1__message_record__free_unpacked(rec, NULL);
      sc.score = eg_hybrid_score(&s->w, sc.keyword, sc.vector, 0, sc.recency);
    }
    eg_msearch_offer(s, &sc);
  }
  return EG_OK;
}

/* ==== embedding only ======================================================== */

typedef struct {
  eg_msearch *s;
  const char *sid;
  size_t examined;
  int stop;
} eg_mscan;

static int eg_mscan_message(void *arg, eg_message_rec *rec) {
  eg_mscan *m = arg;
  eg_msearch *s = m->s;
  int done = 0;
  if (m->examined++ == s->budget) {
    s->truncated = m->stop = 1;
    done = 1;
  } else if (rec->create_time_us < s->from_us) {
    done = 1; /* newest first: the rest are older still */
  } else if (rec->create_time_us < s->to_us &&
             (!s->role_mask || (rec->role > 0 && rec->role < 32 && (s->role_mask & (1u << rec->role))))) {
    eg_scored sc = {.create_us = rec->create_time_us};
    sc.vector = eg_msearch_cosine(s, rec);
    sc.recency = eg_recency((double)(s->now_us - rec->create_time_us) / 1e6, s->half_life_s);
    sc.score = eg_hybrid_score(&s->w, 0, sc.vector, 0, sc.recency);
    sc.pos_len = eg_msearch_pos(sc.pos, m->sid, strlen(m->sid), (uint64_t)rec->seq);
    if (rec->embedding.len == s->dim * sizeof(float)) eg_msearch_offer(s, &sc);
  }
  engram__storage__v1__message_record__free_unpacked(rec, NULL);
  return done;
}

/* Ranks the messages of one session (rec, or looked up by id). */
static eg_err eg_mscan_session(eg_mscan *m, const char *sid, const eg_session_rec *rec) {
  eg_msearch *s = m->s;
  int in;
  uint32_t si;
  if (m->examined++ == s->budget) return s->truncated = m->stop = 1, EG_OK;
  eg_err e = eg_msearch_session(s, sid, strlen(sid), rec, &in, &si, NULL);
  if (e || !in) return e;
  m->sid = sid;
  return eg_store_messages_scan(s->r->rtxn, s->r->tenant, sid, UINT64_MAX, 1, eg_mscan_message, m);
}

struct eg_mscan_walk {
  eg_mscan *m;
  eg_err err;
};

static int eg_mscan_visit(void *arg, eg_session_rec *rec, const eg_session_cursor *cur) {
  struct eg_mscan_walk *w = arg;
  (void)cur;
  w->err = eg_mscan_session(w->m, rec->session_id, rec);
  eg_session_rec_free(rec);
  return w->err != EG_OK || w->m->stop;
}

static eg_err eg_msearch_embedding_only(eg_msearch *s) {
  eg_req *r = s->r;
  eg_mscan m = {.s = s};
  s->budget = (size_t)r->srv->cfg->max_search_postings;
  if (s->in->n_session_ids) {
    for (size_t i = 0; i < s->in->n_session_ids && !m.stop; i++) {
      if (i && strcmp(s->in->session_ids[i], s->in->session_ids[i - 1]) == 0) continue;
      eg_err e = eg_mscan_session(&m, s->in->session_ids[i], NULL);
      if (e) return e;
    }
    return EG_OK;
  }
  struct eg_mscan_walk w = {.m = &m};
  eg_err e = s->user_id ? eg_store_sessions_scan(r->rtxn, r->tenant, s->user_id, NULL, eg_mscan_visit, &w)
                        : eg_store_sessions_by_activity_scan(r->rtxn, r->tenant, NULL, eg_mscan_visit, &w);
  return e ? e : w.err;
}

/* ==== the reply ============================================================= */

/* The result of candidate c; *out NULL when its message is gone (a posting
 * that outlived its message: skipped, counted in s->orphans). */
static eg_err eg_msearch_result(eg_msearch *s, const eg_scored *c, double best_bm25,
                                Engram__V1__MessageSearchResult **out) {
  eg_req *r = s->r;
  char *sid;
  uint64_t seq;
  eg_message_rec *rec;
  *out = NULL;
  eg_err e = eg_msearch_unpos(r, c->pos, c->pos_len, &sid, &seq);
  if (e == EG_OK) e = eg_store_message_get(r->rtxn, r->tenant, sid, seq, &rec);
  if (e == EG_ENOTFOUND) return s->orphans++, EG_OK;
  if (e) return e;
  if (eg_arena_defer(r->arena, eg_message_rec_free, rec)) return EG_ENOMEM;
  Engram__V1__MessageSearchResult *res = EG_ARENA_NEW(r->arena, Engram__V1__MessageSearchResult);
  if (!res) return EG_ENOMEM;
  engram__v1__message_search_result__init(res);
  /* The session's user, whose data key seals the message: an indexed
   * message names it, else its session does. */
  const char *user = rec->index_user_id;
  if (!user[0]) {
    eg_session_rec *srec;
    if ((e = eg_store_session_get(r->rtxn, r->tenant, sid, &srec)) == EG_ENOTFOUND)
      return s->orphans++, EG_OK;
    if (e) return e;
    if (eg_arena_defer(r->arena, eg_session_rec_free, srec)) return EG_ENOMEM;
    user = srec->user_id;
  }
  if ((e = eg_message_to_api(r, user, sid, rec, &res->message))) return e;
  if (rec->embedding.len) {
    size_t dim = rec->embedding.len / sizeof(float);
    if (!(res->message->embedding = EG_ARENA_ARRAY(r->arena, float, dim))) return EG_ENOMEM;
    memcpy(res->message->embedding, rec->embedding.data, dim * sizeof(float));
    res->message->n_embedding = dim;
  }
  const eg_pmap_ent *ent = eg_pmap_find(&s->sess, (const uint8_t *)sid, strlen(sid));
  if (!ent) return EG_ECORRUPT;
  res->session_id = sid;
  res->seq = (int64_t)seq;
  res->user_id = (char *)s->sess_user[ent - s->sess.ents];
  res->score = c->score;
  res->keyword_score = c->keyword;
  res->bm25 = (float)(c->keyword * best_bm25);
  res->vector_score = c->vector;
  res->recency_score = c->recency;
  *out = res;
  return EG_OK;
}

eg_err eg_search_messages(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__SearchMessagesRequest *in = (const void *)msg;
  eg_msearch s = {.r = r, .in = in};
  size_t offset = 0, k = 0, nt = 0;
  /* The query's terms under each read key (server/blind_key.h: two while
   * a blind-index rotation runs), lined up: a message's postings are all
   * under its own key, so it matches only that key's tokens and is never
   * counted twice. */
  uint64_t terms[EG_BLIND_READ_MAX][EG_MSEARCH_TERMS_MAX + 1];
  uint64_t *lined[EG_BLIND_READ_MAX] = {terms[0], terms[1]};
  eg_blind_read keys;
  eg_err e;
  if ((e = eg_msearch_check(r, in, &s, &offset, &k)) || (e = eg_blind_read_ctxs(r, r->rtxn, &keys)))
    return e;
  /* One more than the limit: the first distinct words are kept, so a full
   * array means too many. */
  if ((e = eg_text_terms_lined(&keys, EG_TOKENIZER_VERSION, in->language, in->query,
                               strlen(in->query), lined, EG_MSEARCH_TERMS_MAX + 1, &nt)))
    return e;
  if (nt > EG_MSEARCH_TERMS_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "query", "more than %d distinct words", EG_MSEARCH_TERMS_MAX);
  if (!nt && !in->n_embedding)
    return eg_invalid(r->msg, sizeof r->msg, "query",
                      "no searchable words: only stop words, negation words or no letters and "
                      "digits (give other words or an embedding)");
  if (in->n_session_ids) {
    char **ids = EG_ARENA_ARRAY(r->arena, char *, in->n_session_ids);
    if (!ids) return EG_ENOMEM;
    memcpy(ids, in->session_ids, in->n_session_ids * sizeof *ids);
    qsort(ids, in->n_session_ids, sizeof *ids, eg_sid_cmp);
    /* The request itself stays as sent (the page token binds it): search
     * a sorted copy. */
    Engram__V1__SearchMessagesRequest *copy = EG_ARENA_NEW(r->arena, Engram__V1__SearchMessagesRequest);
    if (!copy) return EG_ENOMEM;
    *copy = *in;
    copy->session_ids = ids;
    s.in = copy;
  }
  s.want = offset + k + 1;
  eg_scored *items = EG_ARENA_ARRAY(r->arena, eg_scored, s.want);
  if (!items || (e = eg_pmap_init(&s.cands, r->arena, 64)) || (e = eg_pmap_init(&s.sess, r->arena, 16)))
    return e ? e : EG_ENOMEM;
  eg_topk_init(&s.top, items, s.want);
  if (nt) {
    if ((e = eg_msearch_keywords(&s, lined, keys.n, nt)) || (e = eg_msearch_rank(&s))) return e;
  } else if (s.q && (e = eg_msearch_embedding_only(&s))) {
    return e;
  }
  eg_topk_sort(&s.top);
  Engram__V1__SearchMessagesResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__SearchMessagesResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__search_messages_response__init(out);
  out->truncated = s.truncated;
  size_t end = s.top.n < offset + k ? s.top.n : offset + k;
  size_t n = end > offset ? end - offset : 0;
  out->results = EG_ARENA_ARRAY(r->arena, Engram__V1__MessageSearchResult *, n ? n : 1);
  if (!out->results) return EG_ENOMEM;
  eg_reply_budget budget;
  eg_reply_budget_init(&budget, r);
  /* The page is ranks [offset, end): an orphan in it leaves it short. */
  size_t next = offset;
  for (; next < end; next++) {
    Engram__V1__MessageSearchResult *res;
    if ((e = eg_msearch_result(&s, &items[next], s.best, &res))) return e;
    if (!res) continue;
    if (!eg_reply_budget_take(&budget, &res->base)) break;
    out->results[out->n_results++] = res;
  }
  if (s.orphans)
    eg_log(EG_LOG_WARN, "SearchMessages (tenant %s): skipped %zu index postings whose message is gone",
           r->tenant, s.orphans);
  if (next < s.top.n && next < EG_MSEARCH_RESULTS_MAX &&
      (e = eg_msearch_token(r, msg, (uint32_t)next, s.now_us, &out->next_page_token)))
    return e;
  r->resp = &out->base;
  return EG_OK;
}
