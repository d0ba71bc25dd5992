/* The background reindex thread, its write items, and the index state
 * reads of search and GetStatus (server/reindex.h). */
#include "server/reindex.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bgthread.h"
#include "common/clock.h"
#include "common/log.h"
#include "replica/replica.h"
#include "server/blind_key.h"
#include "server/blind_rotation.h"
#include "server/convert.h"
#include "server/memory_svc.h"
#include "server/message_terms.h"
#include "server/tokenizer.h"
#include "storage/memories.h"

/* How often the thread looks at index_state when no job runs (a replica
 * promoted, --index-messages turned on, the gauges refreshed), and after a
 * failed step: the retry interval. */
#define EG_REINDEX_IDLE_MS 1000

struct eg_reindex {
  eg_srv *srv;
  eg_writer *writer;
  eg_txn *reader;
  eg_bgthread bg; /* bg.cv also carries an item's done */
  /* The records one step walks at most: --reindex-batch, halved while a
   * step's write is too large for one txn (EG_ELIMIT). The thread's own. */
  size_t batch;
  _Atomic uint64_t records[EG_REINDEX_INDEXES];
  _Atomic uint64_t skipped[EG_REINDEX_INDEXES];
  _Atomic uint64_t pending[EG_REINDEX_INDEXES];
};

const char *eg_reindex_name(unsigned i) {
  return i == EG_REINDEX_MEMORIES ? EG_INDEX_MEMORIES : EG_INDEX_MESSAGES;
}

static void eg_state_free(void *p) {
  engram__storage__v1__index_state_record__free_unpacked(p, NULL);
}

/* The version index `name` is at when it has no row (migration 6 writes
 * both, so only a row removed by hand gets here): the current one when it
 * covers no record, else the oldest its records may be at (memories 1;
 * messages 0, none indexed), so that no record is taken for current by
 * mistake; on a primary that begins a job. Cost: O(1). */
static eg_err eg_state_missing(eg_txn *t, const char *name, unsigned *version) {
  uint64_t n;
  eg_err e = eg_store_index_records(t, name, &n);
  if (e) return e;
  *version = n == 0                                ? EG_TOKENIZER_VERSION
             : strcmp(name, EG_INDEX_MEMORIES) == 0 ? EG_TOKENIZER_V1
                                                    : 0;
  return EG_OK;
}

/* The state of index i into *out, its cleanup deferred to arena a. No
 * row: NULL when the index is current (eg_state_missing), else a state at
 * the version it is at, no job. */
static eg_err eg_state_get(eg_txn *t, eg_arena *a, unsigned i, eg_index_state_rec **out) {
  unsigned version;
  eg_err e = eg_store_index_state_get(t, eg_reindex_name(i), out);
  if (e == EG_ENOTFOUND) {
    *out = NULL;
    if ((e = eg_state_missing(t, eg_reindex_name(i), &version)) || version == EG_TOKENIZER_VERSION)
      return e;
    if (!(*out = EG_ARENA_NEW(a, eg_index_state_rec))) return EG_ENOMEM;
    engram__storage__v1__index_state_record__init(*out);
    (*out)->version = version;
    return EG_OK;
  }
  if (e == EG_OK && eg_arena_defer(a, eg_state_free, *out) != 0) return EG_ENOMEM;
  return e;
}

/* The version a state says its entries are at (NULL: the current). */
static unsigned eg_state_version(const eg_index_state_rec *st) {
  return st ? st->version : EG_TOKENIZER_VERSION;
}

/* ---- reads for search and GetStatus -------------------------------------- */

eg_err eg_index_read_from(eg_txn *t, const char *name, unsigned *version) {
  eg_index_state_rec *st;
  unsigned v = EG_TOKENIZER_VERSION;
  eg_err e = eg_store_index_state_get(t, name, &st);
  *version = EG_TOKENIZER_VERSION;
  if (e == EG_ENOTFOUND) {
    e = eg_state_missing(t, name, &v);
  } else if (e == EG_OK) {
    v = st->version;
    eg_state_free(st);
  }
  if (e) return e;
  if (v < EG_TOKENIZER_VERSION) *version = v < EG_TOKENIZER_V1 ? EG_TOKENIZER_V1 : v;
  return EG_OK;
}

eg_err eg_index_status(eg_req *r, eg_txn *t, Engram__V1__GetStatusResponse *out) {
  out->indexes = EG_ARENA_ARRAY(r->arena, Engram__V1__IndexStatus *, EG_REINDEX_INDEXES);
  if (!out->indexes) return EG_ENOMEM;
  for (unsigned i = 0; i < EG_REINDEX_INDEXES; i++) {
    eg_index_state_rec *st;
    Engram__V1__IndexStatus *s = EG_ARENA_NEW(r->arena, Engram__V1__IndexStatus);
    if (!s) return EG_ENOMEM;
    eg_err e = eg_state_get(t, r->arena, i, &st);
    if (e) return e;
    engram__v1__index_status__init(s);
    s->index = (char *)eg_reindex_name(i);
    s->version = eg_state_version(st);
    if (st && st->target) {
      s->target_version = st->target;
      s->done = st->done;
      s->total = st->total;
      if (st->start_time_us && !(s->start_time = eg_timestamp(r, st->start_time_us)))
        return EG_ENOMEM;
    }
    out->indexes[out->n_indexes++] = s;
  }
  return EG_OK;
}

/* ---- what a job needs ---------------------------------------------------- */

static int eg_messages_off(const eg_config *cfg) {
  return strcmp(cfg->index_messages, "true") != 0;
}

/* What index i's state st (NULL: no row) calls for. No job begins while
 * a blind-index rotation runs (rotating): it waits for the rotation's
 * end (server/blind_rotation.h). */
enum { EG_RX_NOTHING, EG_RX_OFF, EG_RX_BEGIN, EG_RX_STEP };
static int eg_rx_wants(const eg_config *cfg, unsigned i, const eg_index_state_rec *st,
                       int rotating) {
  if (i == EG_REINDEX_MESSAGES && eg_messages_off(cfg))
    return st && st->version == 0 && st->target == 0 ? EG_RX_NOTHING : EG_RX_OFF;
  if (st && st->target == EG_TOKENIZER_VERSION) return EG_RX_STEP;
  /* A job toward another version (an older or newer engramd's) begins anew. */
  if (st && (st->version < EG_TOKENIZER_VERSION || st->target)) return rotating ? EG_RX_NOTHING : EG_RX_BEGIN;
  return EG_RX_NOTHING;
}

/* ---- write items ----------------------------------------------------------- */

/* What the items share: the writer's item first (it hands back &item). */
typedef struct {
  eg_write_item item;
  eg_reindex *x;
  char why[256];
  /* done's report to the thread; guarded by x->bg.mu */
  int finished;
  eg_err err;
} eg_rx_item;

static void eg_rx_done(eg_write_item *item, eg_err err, uint64_t lsn, int busy) {
  eg_rx_item *it = (eg_rx_item *)item;
  (void)lsn;
  (void)busy;
  pthread_mutex_lock(&it->x->bg.mu);
  it->err = err;
  it->finished = 1;
  pthread_cond_broadcast(&it->x->bg.cv);
  pthread_mutex_unlock(&it->x->bg.mu);
}

/* Submits it and waits for its commit; its apply's or the commit's error. */
static eg_err eg_rx_submit(eg_rx_item *it) {
  it->item.done = eg_rx_done;
  it->item.why = it->why;
  it->item.whylen = sizeof it->why;
  eg_writer_submit(it->x->writer, &it->item);
  pthread_mutex_lock(&it->x->bg.mu);
  while (!it->finished) pthread_cond_wait(&it->x->bg.cv, &it->x->bg.mu);
  pthread_mutex_unlock(&it->x->bg.mu);
  return it->err;
}

/* The control item: turns "messages" off, begins jobs (decided again in
 * the write txn, from what it reads there). */
typedef struct {
  eg_rx_item rx;
  int64_t now_us;
  int changed[EG_REINDEX_INDEXES]; /* rewritten by every run of apply */
  uint64_t total[EG_REINDEX_INDEXES];
} eg_rx_control;

static eg_err eg_rx_control_apply(eg_write_item *item, eg_txn *t) {
  eg_rx_control *c = (eg_rx_control *)item;
  const eg_config *cfg = c->rx.x->srv->cfg;
  int any = 0;
  eg_arena *a = eg_arena_new();
  if (!a) return EG_ENOMEM;
  int rotating;
  eg_err e = eg_blind_rotation_running(t, &rotating);
  for (unsigned i = 0; i < EG_REINDEX_INDEXES && !e; i++) {
    eg_index_state_rec *st, rec = ENGRAM__STORAGE__V1__INDEX_STATE_RECORD__INIT;
    int want;
    c->changed[i] = 0;
    if ((e = eg_state_get(t, a, i, &st))) break;
    want = eg_rx_wants(cfg, i, st, rotating);
    if (want == EG_RX_OFF) {
      rec.version = 0;
    } else if (want == EG_RX_BEGIN) {
      rec.version = st->version > EG_TOKENIZER_VERSION ? EG_TOKENIZER_VERSION : st->version;
      rec.target = EG_TOKENIZER_VERSION;
      rec.start_time_us = c->now_us;
      if ((e = eg_store_index_records(t, eg_reindex_name(i), &rec.total))) break;
      c->total[i] = rec.total;
    } else {
      continue;
    }
    if ((e = eg_store_index_state_put(t, eg_reindex_name(i), &rec))) break;
    c->changed[i] = want;
    any = 1;
  }
  eg_arena_free(a);
  /* Nothing to change (another step did it): no empty commit. */
  return e ? e : any ? EG_OK : EG_ENOTFOUND;
}

/* One record of a step, walked and converted, or one it leaves as it is
 * (unreadable, or refused by the write). */
typedef struct {
  /* The cursor before it and the records the step walked before it: where
   * the state stops when the write cannot use its terms (the next step
   * reads it again). */
  const uint8_t *before;
  size_t before_len;
  uint64_t visited_before;
  /* Set by the walk: why its text cannot be read (nothing to write). */
  const char *unreadable;
  /* Set by apply: the write's refusal of it (EG_OK: written or not due). */
  eg_err refused;
  const char *tenant;
  const eg_blind_ctx *ctx;  /* memories: the tenant's, for the filter tokens */
  const char *session_id;   /* messages */
  const eg_memory_rec *mem; /* memories: the walked record and the new one */
  eg_memory_rec mem_new;
  const eg_message_rec *msg; /* messages: the same */
  eg_message_rec msg_new;
} eg_rx_rec;

/* The step item: what the walk found, written if nothing changed since. */
typedef struct {
  eg_rx_item rx;
  unsigned index;
  eg_arena *arena;
  eg_index_state_rec from; /* the state the walk began at (cursor, done) */
  const uint8_t *last; /* the last key walked (before the first: from.cursor) */
  size_t last_len;
  const uint8_t *prev; /* the one before it */
  size_t prev_len;
  uint64_t visited;
  int more;
  /* Set by apply: the write stopped at recs[through] (else through is
   * n): recs[0..through) are behind the new cursor. */
  int stopped;
  size_t through;
  eg_rx_rec *recs;
  size_t n;
  /* The walk's caches: the tenant's blind context, the session's record. */
  const char *ctx_tenant;
  eg_blind_ctx *ctx;
  uint32_t ctx_key; /* the key id ctx is under */
  eg_blind_keys keys; /* memories: the row as the walk read it */
  const char *s_tenant, *s_id;
  const eg_session_rec *session; /* NULL: none (gone) */
  eg_err err;
} eg_rx_step;

static eg_err eg_rx_same_state(const eg_index_state_rec *cur, const eg_index_state_rec *from) {
  /* Only this thread moves a job, but a control item (indexing turned off)
   * or a replay may have: then the walk is stale and goes again. */
  if (!cur || cur->target != from->target || cur->done != from->done ||
      cur->cursor.len != from->cursor.len ||
      (from->cursor.len && memcmp(cur->cursor.data, from->cursor.data, from->cursor.len) != 0))
    return EG_EABORTED;
  return EG_OK;
}

static int eg_bytes_eq(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b) {
  return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static unsigned eg_memory_version(const eg_memory_rec *m) {
  return m->index_version ? m->index_version : EG_TOKENIZER_V1;
}

/* Puts the terms r's walk computed onto the memory as it is now. An update
 * since the walk (importance, metadata, namespace, tags, a duplicate
 * mark, a merge) copies the old record, its index_version and entries
 * included, and moves its version: skipping it would leave it below the
 * target when the job ends, found by no query. So: already at the target
 * (a text edit indexes at the current version): nothing to do; the same
 * text (sealed token bytes) and language the walk tokenized: its terms,
 * every other field as it is now; else *stop (not expected: the next step
 * reads it again). */
static eg_err eg_rx_rewrite_memory(eg_txn *t, unsigned target, const eg_rx_rec *r, int *stop) {
  eg_memory_rec *cur;
  eg_err e = eg_store_memory_get(t, r->tenant, r->mem->memory_id, &cur);
  if (e == EG_ENOTFOUND) return EG_OK; /* purged since: nothing to index */
  if (e) return e;
  if (eg_memory_version(cur) >= target) {
    /* converted since */
  } else if (eg_bytes_eq(&cur->text_token, &r->mem->text_token) &&
             strcmp(cur->language, r->mem->language) == 0) {
    eg_memory_rec next = *cur;
    next.term_hashes = r->mem_new.term_hashes;
    next.n_term_hashes = r->mem_new.n_term_hashes;
    next.index_version = r->mem_new.index_version;
    next.flags = r->mem_new.flags;
    /* As the services' puts do (eg_memory_put): a record from before the
     * filter tokens (0.14's) gets them, or the layout 3+ meta this put
     * writes would hide it from agent and source filters. The same ids
     * hash the same, so a record that has them keeps them. */
    eg_memory_ids_hash(r->ctx, &next);
    e = eg_store_memory_put(t, r->tenant, &next, cur, NULL);
  } else {
    *stop = 1;
  }
  engram__storage__v1__memory_record__free_unpacked(cur, NULL);
  return e;
}

/* *live: whether session_id (of tenant) is still there and searchable;
 * *checked names the session it says it for (a step's messages come
 * session by session). */
static eg_err eg_rx_session_live(eg_txn *t, const eg_rx_rec *r, const eg_rx_rec **checked,
                                 int *live) {
  if (*checked && (*checked)->session_id == r->session_id) return EG_OK;
  eg_session_rec *s;
  eg_err e = eg_store_session_get(t, r->tenant, r->session_id, &s);
  if (e && e != EG_ENOTFOUND) return e;
  *live = e == EG_OK && !s->exclude_from_search;
  if (e == EG_OK) engram__storage__v1__session_record__free_unpacked(s, NULL);
  *checked = r;
  return EG_OK;
}

/* As eg_rx_rewrite_memory. Besides this job only a data-key rotation
 * changes a stored message (it re-seals content_token: the content check
 * stops the step there, and the next reads it again); its session's
 * language and opt-out never change. */
static eg_err eg_rx_rewrite_message(eg_txn *t, unsigned target, const eg_rx_rec *r,
                                    const eg_rx_rec **checked, int *live, int *stop) {
  eg_message_rec *cur;
  /* A session retired since keeps its messages until the sweeper purges
   * them: they get no new index entries. */
  eg_err e = eg_rx_session_live(t, r, checked, live);
  if (e || !*live) return e;
  e = eg_store_message_get(t, r->tenant, r->session_id, (uint64_t)r->msg->seq, &cur);
  if (e == EG_ENOTFOUND) return EG_OK; /* deleted since */
  if (e) return e;
  if (cur->index_version >= target) {
    /* converted since */
  } else if (eg_bytes_eq(&cur->content_token, &r->msg->content_token)) {
    eg_message_rec next = *cur;
    next.index_version = r->msg_new.index_version;
    next.index_terms = r->msg_new.index_terms;
    next.n_index_terms = r->msg_new.n_index_terms;
    next.index_tf = r->msg_new.index_tf;
    next.index_words = r->msg_new.index_words;
    next.index_user_id = r->msg_new.index_user_id;
    next.blind_key_id = r->msg_new.blind_key_id;
    e = eg_store_message_reindex(t, r->tenant, r->session_id, cur, &next);
  } else {
    *stop = 1;
  }
  engram__storage__v1__message_record__free_unpacked(cur, NULL);
  return e;
}

/* Errors by which a write refuses the record itself (EG_EINVAL: the new
 * record fails eg_rec_check or a limit of the store; EG_ECORRUPT: the
 * stored one, its old index fields malformed, say). Every retry would
 * meet them again and stop the job there for good. */
static int eg_rx_refusal(eg_err e) { return e == EG_EINVAL || e == EG_ECORRUPT; }

/* Rewrites r in a sub txn of t. A record the write refuses is rolled back
 * alone (a failed put may have half-written its postings) and left as it
 * is, r->refused saying why; the others of the step are written. Other
 * errors are the step's. */
static eg_err eg_rx_rewrite(eg_rx_step *s, eg_txn *t, eg_rx_rec *r, const eg_rx_rec **checked,
                            int *live, int *stop) {
  eg_txn *sub;
  r->refused = EG_OK;
  if (r->unreadable) return EG_OK;
  eg_err e = eg_store_sub_begin(t, &sub);
  if (e) return e;
  e = s->index == EG_REINDEX_MEMORIES
          ? eg_rx_rewrite_memory(sub, s->from.target, r, stop)
          : eg_rx_rewrite_message(sub, s->from.target, r, checked, live, stop);
  if (e == EG_OK) return eg_store_sub_commit(sub);
  eg_store_sub_abort(sub);
  if (!eg_rx_refusal(e)) return e;
  r->refused = e;
  return EG_OK;
}

static eg_err eg_rx_step_apply(eg_write_item *item, eg_txn *t) {
  eg_rx_step *s = (eg_rx_step *)item;
  const char *name = eg_reindex_name(s->index);
  eg_index_state_rec *cur;
  const eg_rx_rec *checked = NULL;
  int live = 0, stop = 0;
  size_t i = 0;
  eg_err e = eg_store_index_state_get(t, name, &cur);
  if (e == EG_ENOTFOUND) cur = NULL;
  else if (e) return e;
  s->stopped = 0; /* apply may run again */
  s->through = 0;
  if ((e = eg_rx_same_state(cur, &s->from))) goto out;
  for (; i < s->n; i++) {
    if ((e = eg_rx_rewrite(s, t, &s->recs[i], &checked, &live, &stop))) goto out;
    if (stop) break;
  }
  s->through = i;
  eg_index_state_rec next = *cur;
  if (stop) {
    /* recs[i] and those after it wait for the next step. */
    next.cursor = (ProtobufCBinaryData){.len = s->recs[i].before_len,
                                        .data = (uint8_t *)s->recs[i].before};
    next.done = cur->done + s->recs[i].visited_before;
    s->stopped = 1;
  } else if (s->more) {
    next.cursor = (ProtobufCBinaryData){.len = s->last_len, .data = (uint8_t *)s->last};
    next.done = cur->done + s->visited;
  } else {
    /* The walk's end: every record is at the target now, or left as it is
     * (unreadable, refused, or a message not to index). No writer puts a
     * record below the target behind the cursor (appends, forks, memory
     * writes index at the current version, or copy a record's own), so
     * one walk is enough. */
    next = (eg_index_state_rec)ENGRAM__STORAGE__V1__INDEX_STATE_RECORD__INIT;
    next.version = cur->target;
  }
  if (!e) e = eg_store_index_state_put(t, name, &next);
out:
  if (cur) eg_state_free(cur);
  return e;
}

/* ---- the walk (on the thread, in a read txn) ------------------------------- */

/* A request of the step's own, to open sealed fields as the services do. */
static eg_req eg_rx_req(eg_rx_step *s, const char *tenant) {
  return (eg_req){.srv = s->rx.x->srv, .tenant = tenant, .arena = s->arena, .now_us = eg_now_us()};
}

/* Remembers a walked record's key (the cursor after it; the one before
 * it moves to prev) and tenant; the tenant's blind context into s->ctx. */
static eg_err eg_rx_visit(eg_rx_step *s, const uint8_t *key, size_t key_len, const char *tenant,
                          const char **tenant_copy) {
  uint8_t *copy = eg_arena_alloc(s->arena, key_len ? key_len : 1);
  if (!copy) return EG_ENOMEM;
  memcpy(copy, key, key_len);
  s->prev = s->last;
  s->prev_len = s->last_len;
  s->last = copy;
  s->last_len = key_len;
  s->visited++;
  if (s->ctx_tenant && strcmp(s->ctx_tenant, tenant) == 0) {
    *tenant_copy = s->ctx_tenant;
    return EG_OK;
  }
  if (!(*tenant_copy = eg_arena_strndup(s->arena, tenant, strlen(tenant)))) return EG_ENOMEM;
  eg_req r = eg_rx_req(s, *tenant_copy);
  eg_err e = eg_blind_ctx_of(&r, &s->ctx);
  if (e == EG_OK) s->ctx_tenant = *tenant_copy, s->ctx_key = r.blind_key_used;
  return e;
}

/* A field that does not open (tampered, its key gone, or erased: its
 * user's data key destroyed) cannot be
 * indexed: x, the record's entry, says why (r's message) and the write
 * leaves the record with its old entries, the job going on (a retry would
 * stop it for good); every read of it fails alike. */
static eg_err eg_rx_unreadable(eg_rx_step *s, eg_rx_rec *x, const eg_req *r) {
  if (!(x->unreadable = eg_arena_strndup(s->arena, r->msg, strlen(r->msg)))) return EG_ENOMEM;
  s->n++;
  return EG_OK;
}

static void eg_memory_free(void *p) { engram__storage__v1__memory_record__free_unpacked(p, NULL); }
static void eg_message_free(void *p) {
  engram__storage__v1__message_record__free_unpacked(p, NULL);
}
static void eg_session_free(void *p) {
  engram__storage__v1__session_record__free_unpacked(p, NULL);
}

/* A memory below the target: its text opened and its terms at the target
 * (EG_TOKENIZER_VERSION, what eg_text_index makes), in its language, the
 * negation flag too, under the memory's own key (its other tokens stay
 * under it: server/reindex.h): the write key's context, or one of its own
 * for a memory under another key. */
static eg_err eg_rx_memory(eg_rx_step *s, const char *tenant, const eg_memory_rec *rec) {
  eg_req r = eg_rx_req(s, tenant);
  char *text;
  size_t len;
  eg_blind_ctx *ctx = s->ctx;
  uint32_t own = eg_blind_keys_rec(&s->keys, rec->blind_key_id);
  eg_err e;
  eg_rx_rec *x = &s->recs[s->n];
  *x = (eg_rx_rec){.before = s->prev,
                   .before_len = s->prev_len,
                   .visited_before = s->visited - 1,
                   .tenant = tenant,
                   .ctx = ctx,
                   .mem = rec,
                   .mem_new = *rec};
  e = eg_field_open(&r, rec->user_id, "memory", rec->memory_id, "text", &rec->text_token, &text,
                    &len);
  if (e == EG_ECORRUPT || e == EG_EERASED) return eg_rx_unreadable(s, x, &r);
  if (e) return e;
  /* After the text: an erased user's memory (left under a key since
   * retired) is skipped above, as unreadable. A readable one under a key
   * the keyring lacks cannot come from engramd (retirement refuses a key
   * any record is under): a stamp tampered with, skipped alike rather
   * than a step that fails forever. */
  if (own != s->ctx_key && (e = eg_blind_ctx_under(&r, own, &ctx))) {
    if (e != EG_EINVAL) return e;
    snprintf(r.msg, sizeof r.msg, "its blind-index key %u is not in the keyring", (unsigned)own);
    return eg_rx_unreadable(s, x, &r);
  }
  x->ctx = ctx;
  if ((e = eg_text_index(&r, ctx, text, len, &x->mem_new))) return e;
  s->rx.item.bytes += engram__storage__v1__memory_record__get_packed_size(&x->mem_new);
  s->n++;
  return EG_OK;
}

static int eg_rx_memory_visit(void *arg, const uint8_t *key, size_t key_len, const char *tenant,
                              eg_memory_rec *rec) {
  eg_rx_step *s = arg;
  const char *tc;
  if (eg_arena_defer(s->arena, eg_memory_free, rec) != 0 ||
      (s->err = eg_rx_visit(s, key, key_len, tenant, &tc)))
    return s->err = s->err ? s->err : EG_ENOMEM, 1;
  unsigned version = rec->index_version ? rec->index_version : EG_TOKENIZER_V1;
  if (version < s->from.target) s->err = eg_rx_memory(s, tc, rec);
  return s->err != EG_OK;
}

/* The session of a walked message (cached: a session's messages come
 * together): *out NULL when it is gone. */
static eg_err eg_rx_session(eg_rx_step *s, eg_txn *t, const char *tenant, const char *session_id,
                            const eg_session_rec **out) {
  if (s->s_id && strcmp(s->s_id, session_id) == 0 && strcmp(s->s_tenant, tenant) == 0) {
    *out = s->session;
    return EG_OK;
  }
  eg_session_rec *rec = NULL;
  eg_err e = eg_store_session_get(t, tenant, session_id, &rec);
  if (e == EG_ENOTFOUND) rec = NULL;
  else if (e) return e;
  if (rec && eg_arena_defer(s->arena, eg_session_free, rec) != 0) return EG_ENOMEM;
  if (!(s->s_id = eg_arena_strndup(s->arena, session_id, strlen(session_id)))) return EG_ENOMEM;
  s->s_tenant = tenant;
  *out = s->session = rec;
  return EG_OK;
}

/* A message below the target: its content opened and its index fields at
 * the target, in its session's language. */
static eg_err eg_rx_message(eg_rx_step *s, const char *tenant, const eg_session_rec *session,
                            const eg_message_rec *rec) {
  eg_req r = eg_rx_req(s, tenant);
  char *text;
  size_t len;
  const char *rid = eg_message_record_id(&r, s->s_id, rec->seq);
  if (!rid) return EG_ENOMEM;
  eg_rx_rec *x = &s->recs[s->n];
  *x = (eg_rx_rec){.before = s->prev,
                   .before_len = s->prev_len,
                   .visited_before = s->visited - 1,
                   .tenant = tenant,
                   .session_id = s->s_id,
                   .msg = rec,
                   .msg_new = *rec};
  eg_err e = eg_field_open(&r, session->user_id, "message", rid, "content", &rec->content_token,
                           &text, &len);
  if (e == EG_ECORRUPT || e == EG_EERASED) return eg_rx_unreadable(s, x, &r);
  if (e) return e;
  if ((e = eg_message_index_fields(s->arena, s->ctx, s->ctx_key, s->from.target, session->language,
                                   session->user_id, text, len, &x->msg_new)))
    return e;
  s->rx.item.bytes += engram__storage__v1__message_record__get_packed_size(&x->msg_new);
  s->n++;
  return EG_OK;
}

struct eg_rx_message_walk {
  eg_rx_step *s;
  eg_txn *t;
};

static int eg_rx_message_visit(void *arg, const uint8_t *key, size_t key_len, const char *tenant,
                               const char *session_id, eg_message_rec *rec) {
  struct eg_rx_message_walk *w = arg;
  eg_rx_step *s = w->s;
  const char *tc;
  const eg_session_rec *session;
  if (eg_arena_defer(s->arena, eg_message_free, rec) != 0 ||
      (s->err = eg_rx_visit(s, key, key_len, tenant, &tc)) ||
      (s->err = eg_rx_session(s, w->t, tc, session_id, &session)))
    return s->err = s->err ? s->err : EG_ENOMEM, 1;
  /* Not indexed: no session to say how, or the session opted out. */
  if (!session || session->exclude_from_search) return 0;
  if (rec->index_version < s->from.target) s->err = eg_rx_message(s, tc, session, rec);
  return s->err != EG_OK;
}

/* ---- the thread ------------------------------------------------------------- */

/* Logs, once each, the records a committed step s left below its target
 * (those behind its new cursor), and counts them. */
static void eg_rx_log_skipped(eg_reindex *x, const eg_rx_step *s) {
  for (size_t k = 0; k < s->through; k++) {
    const eg_rx_rec *r = &s->recs[k];
    char why[160];
    if (!r->unreadable && !r->refused) continue;
    atomic_fetch_add_explicit(&x->skipped[s->index], 1, memory_order_relaxed);
    if (!r->unreadable)
      snprintf(why, sizeof why, "its record cannot be rewritten: %s", eg_err_msg(r->refused));
    const char *reason = r->unreadable ? r->unreadable : why;
    if (s->index == EG_REINDEX_MEMORIES)
      eg_log(EG_LOG_WARN, "reindex of %s: memory %s of tenant %s left below tokenizer version "
             "%u (%s)", eg_reindex_name(s->index), r->mem->memory_id, r->tenant,
             s->from.target, reason);
    else
      eg_log(EG_LOG_WARN, "reindex of %s: message %lld of session %s of tenant %s left below "
             "tokenizer version %u (%s)", eg_reindex_name(s->index), (long long)r->msg->seq,
             r->session_id, r->tenant, s->from.target, reason);
  }
}

/* One step of index i's job from state st (read by the thread): walks,
 * then writes through the writer. *walked: the records it walked (0 when
 * it failed). */
static eg_err eg_rx_step_run(eg_reindex *x, unsigned i, const eg_index_state_rec *st,
                             uint64_t *walked) {
  eg_rx_step s = {.rx = {.item = {.apply = eg_rx_step_apply}, .x = x},
                  .index = i,
                  .from = *st,
                  .last = st->cursor.data,
                  .last_len = st->cursor.len};
  eg_err e = EG_OK;
  *walked = 0;
  if (!(s.arena = eg_arena_new()) || !(s.recs = EG_ARENA_ARRAY(s.arena, eg_rx_rec, x->batch))) {
    eg_arena_free(s.arena);
    return EG_ENOMEM;
  }
  /* The state's cursor lives in the caller's record: the walk reads it. */
  if ((e = eg_store_reader_begin(x->reader)) == EG_OK) {
    const uint8_t *after = st->cursor.data;
    size_t after_len = st->cursor.len;
    if (i == EG_REINDEX_MEMORIES &&
        (e = eg_blind_keys_get(x->reader, eg_srv_keys(x->srv), &s.keys)) == EG_OK) {
      e = eg_store_memories_walk(x->reader, after, after_len, x->batch, eg_rx_memory_visit, &s,
                                 &s.more);
    } else if (i != EG_REINDEX_MEMORIES) {
      struct eg_rx_message_walk w = {.s = &s, .t = x->reader};
      e = eg_store_messages_walk(x->reader, after, after_len, x->batch, eg_rx_message_visit, &w,
                                 &s.more);
    }
    if (e == EG_OK) e = s.err;
    /* Ended before the write: a read txn held across it would keep the
     * writer from growing the map. */
    eg_store_reader_end(x->reader);
  }
  if (e == EG_OK) e = eg_rx_submit(&s.rx);
  if (e == EG_OK) {
    *walked = s.visited;
    atomic_fetch_add_explicit(&x->records[i], s.visited, memory_order_relaxed);
    eg_rx_log_skipped(x, &s);
    if (s.stopped)
      eg_log(EG_LOG_WARN, "reindex of %s: a record changed below tokenizer version %u since "
             "the walk read it; read again next step", eg_reindex_name(i), st->target);
    else if (!s.more)
      eg_log(EG_LOG_INFO, "reindex of %s done: every entry at tokenizer version %u",
             eg_reindex_name(i), st->target);
  } else if (e == EG_ELIMIT && x->batch > 1) {
    /* Too much for one txn: smaller steps from now on. */
    x->batch /= 2;
  }
  if (e != EG_OK)
    eg_log(EG_LOG_WARN, "reindex of %s: %s%s%s; retrying in %d ms", eg_reindex_name(i),
           eg_err_msg(e), s.rx.why[0] ? ": " : "", s.rx.why, EG_REINDEX_IDLE_MS);
  eg_arena_free(s.arena);
  return e;
}

/* Begins jobs and turns "messages" off as the states want. */
static eg_err eg_rx_control_run(eg_reindex *x) {
  eg_rx_control c = {.rx = {.item = {.apply = eg_rx_control_apply}, .x = x},
                     .now_us = eg_now_us()};
  eg_err e = eg_rx_submit(&c.rx);
  if (e == EG_ENOTFOUND) return EG_OK; /* nothing left to change */
  if (e != EG_OK) {
    eg_log(EG_LOG_WARN, "reindex: cannot set the index state: %s; retrying in %d ms",
           eg_err_msg(e), EG_REINDEX_IDLE_MS);
    return e;
  }
  for (unsigned i = 0; i < EG_REINDEX_INDEXES; i++) {
    if (c.changed[i] == EG_RX_OFF)
      eg_log(EG_LOG_INFO, "%s not indexed (--index-messages=false): reindexed when it is on",
             eg_reindex_name(i));
    else if (c.changed[i] == EG_RX_BEGIN)
      eg_log(EG_LOG_INFO, "reindex of %s to tokenizer version %u begins: %llu records",
             eg_reindex_name(i), EG_TOKENIZER_VERSION, (unsigned long long)c.total[i]);
  }
  return EG_OK;
}

/* One time round: reads the states (every node: the gauges), and on the
 * primary changes or moves a job. Returns how long to sleep after. */
static int64_t eg_rx_round(eg_reindex *x) {
  eg_index_state_rec *st[EG_REINDEX_INDEXES] = {NULL};
  eg_arena *a = eg_arena_new();
  if (!a) return EG_REINDEX_IDLE_MS;
  int rotating = 0;
  eg_err e = eg_store_reader_begin(x->reader);
  for (unsigned i = 0; i < EG_REINDEX_INDEXES && e == EG_OK; i++)
    e = eg_state_get(x->reader, a, i, &st[i]);
  if (e == EG_OK) e = eg_blind_rotation_running(x->reader, &rotating);
  eg_store_reader_end(x->reader);
  int64_t sleep_ms = EG_REINDEX_IDLE_MS;
  /* The write key of writes that read no snapshot, as the replicated row
   * now says (every node: a promoted replica's writes take the right one
   * without a refused first try). */
  if (e == EG_OK) e = eg_blind_key_load(x->srv);
  if (e != EG_OK) {
    eg_log(EG_LOG_WARN, "reindex: cannot read the index state: %s", eg_err_msg(e));
    eg_arena_free(a);
    return sleep_ms;
  }
  int control = 0, step = -1;
  for (unsigned i = 0; i < EG_REINDEX_INDEXES; i++) {
    uint64_t pending = st[i] && st[i]->target && st[i]->total > st[i]->done
                           ? st[i]->total - st[i]->done : 0;
    atomic_store_explicit(&x->pending[i], pending, memory_order_relaxed);
    int want = eg_rx_wants(x->srv->cfg, i, st[i], rotating);
    control |= want == EG_RX_OFF || want == EG_RX_BEGIN;
    if (want == EG_RX_STEP && step < 0) step = (int)i;
  }
  /* A fenced primary may be deposed already: what it wrote now would only
   * part its log from the next primary's. */
  if (eg_repl_is_primary(x->srv->repl) && !eg_repl_fenced(x->srv->repl)) {
    uint64_t walked;
    if (control) {
      if (eg_rx_control_run(x) == EG_OK) sleep_ms = 0; /* the job's first step next */
    } else if (step >= 0) {
      if (eg_rx_step_run(x, (unsigned)step, st[step], &walked) == EG_OK)
        /* --reindex-rate: the records just walked take this long. */
        sleep_ms = (int64_t)(walked * 1000 / (uint64_t)x->srv->cfg->reindex_rate);
    } else if (rotating) {
      /* No tokenizer job: the blind-index rotation's step, at the same
       * rate. */
      eg_err be = eg_blind_rotation_step(x->srv, x->writer, x->reader, x->batch, &walked);
      if (be == EG_OK)
        sleep_ms = (int64_t)(walked * 1000 / (uint64_t)x->srv->cfg->reindex_rate);
      else if (be == EG_ELIMIT && x->batch > 1)
        x->batch /= 2;
      if (be != EG_OK && be != EG_ENOTFOUND)
        eg_log(EG_LOG_WARN, "blind-index rotation: %s; retrying in %d ms", eg_err_msg(be),
               EG_REINDEX_IDLE_MS);
    }
  }
  eg_arena_free(a);
  return sleep_ms;
}

static void *eg_reindex_main(void *arg) {
  eg_reindex *x = arg;
  pthread_mutex_lock(&x->bg.mu);
  while (!x->bg.stopping) {
    pthread_mutex_unlock(&x->bg.mu);
    int64_t ms = eg_rx_round(x);
    pthread_mutex_lock(&x->bg.mu);
    if (ms > 0) eg_bgthread_sleep(&x->bg, ms);
  }
  pthread_mutex_unlock(&x->bg.mu);
  eg_tokenizer_thread_end();
  return NULL;
}

eg_err eg_reindex_start(eg_srv *srv, eg_writer *writer, eg_reindex **out, char *err,
                        size_t errlen) {
  eg_reindex *x = calloc(1, sizeof *x);
  if (!x) {
    snprintf(err, errlen, "cannot start the reindex thread: out of memory");
    return EG_ENOMEM;
  }
  x->srv = srv;
  x->writer = writer;
  x->batch = (size_t)srv->cfg->reindex_batch;
  eg_err e = eg_store_reader_new(srv->store, &x->reader);
  if (e != EG_OK) {
    snprintf(err, errlen, "cannot start the reindex thread: %s", eg_err_msg(e));
    free(x);
    return e;
  }
  if ((e = eg_bgthread_start(&x->bg, eg_reindex_main, x, "reindex", "reindex", err, errlen)) != EG_OK) {
    eg_store_reader_free(x->reader);
    free(x);
    return e;
  }
  *out = x;
  return EG_OK;
}

void eg_reindex_stop(eg_reindex *x) {
  if (!x) return;
  eg_bgthread_stop(&x->bg);
  eg_store_reader_free(x->reader);
  free(x);
}

void eg_reindex_get_stats(const eg_reindex *x, eg_reindex_stats *out) {
  memset(out, 0, sizeof *out);
  if (!x) return;
  for (unsigned i = 0; i < EG_REINDEX_INDEXES; i++) {
    out->records[i] = atomic_load_explicit(&x->records[i], memory_order_relaxed);
    out->skipped[i] = atomic_load_explicit(&x->skipped[i], memory_order_relaxed);
    out->pending[i] = atomic_load_explicit(&x->pending[i], memory_order_relaxed);
  }
}
