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
  _Atomic uint64_t pending[EG_REINDEX_INDEXES];
};

const char *eg_reindex_name(unsigned i) {
  return i == EG_REINDEX_MEMORIES ? EG_INDEX_MEMORIES : EG_INDEX_MESSAGES;
}

static void eg_state_free(void *p) {
  engram__storage__v1__index_state_record__free_unpacked(p, NULL);
}

/* The state of index i into *out (NULL when it has no row), its cleanup
 * deferred to arena a. */
static eg_err eg_state_get(eg_txn *t, eg_arena *a, unsigned i, eg_index_state_rec **out) {
  eg_err e = eg_store_index_state_get(t, eg_reindex_name(i), out);
  if (e == EG_ENOTFOUND) {
    *out = NULL;
    return EG_OK;
  }
  if (e == EG_OK && eg_arena_defer(a, eg_state_free, *out) != 0) return EG_ENOMEM;
  return e;
}

/* The version a state says its entries are at (no row: the current). */
static unsigned eg_state_version(const eg_index_state_rec *st) {
  return st ? st->version : EG_TOKENIZER_VERSION;
}

/* ---- reads for search and GetStatus -------------------------------------- */

eg_err eg_index_read_from(eg_txn *t, const char *name, unsigned *version) {
  eg_index_state_rec *st;
  eg_err e = eg_store_index_state_get(t, name, &st);
  *version = EG_TOKENIZER_VERSION;
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e) return e;
  if (st->version < EG_TOKENIZER_VERSION)
    *version = st->version < EG_TOKENIZER_V1 ? EG_TOKENIZER_V1 : st->version;
  eg_state_free(st);
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

/* What index i's state st (NULL: no row) calls for. */
enum { EG_RX_NOTHING, EG_RX_OFF, EG_RX_BEGIN, EG_RX_STEP };
static int eg_rx_wants(const eg_config *cfg, unsigned i, const eg_index_state_rec *st) {
  if (i == EG_REINDEX_MESSAGES && eg_messages_off(cfg))
    return st && st->version == 0 && st->target == 0 ? EG_RX_NOTHING : EG_RX_OFF;
  if (st && st->target == EG_TOKENIZER_VERSION) return EG_RX_STEP;
  /* A job toward another version (an older or newer engramd's) begins anew. */
  if (st && (st->version < EG_TOKENIZER_VERSION || st->target)) return EG_RX_BEGIN;
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
  eg_err e = EG_OK;
  for (unsigned i = 0; i < EG_REINDEX_INDEXES && !e; i++) {
    eg_index_state_rec *st, rec = ENGRAM__STORAGE__V1__INDEX_STATE_RECORD__INIT;
    int want;
    c->changed[i] = 0;
    if ((e = eg_state_get(t, a, i, &st))) break;
    want = eg_rx_wants(cfg, i, st);
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

/* One record of a step, walked and converted. */
typedef struct {
  const char *tenant;
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
  uint8_t *last;           /* the last key walked */
  size_t last_len;
  uint64_t visited;
  int more;
  eg_rx_rec *recs;
  size_t n;
  /* The walk's caches: the tenant's blind context, the session's record. */
  const char *ctx_tenant;
  eg_blind_ctx *ctx;
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

static eg_err eg_rx_rewrite_memory(eg_txn *t, const eg_rx_rec *r) {
  eg_memory_rec *cur;
  eg_err e = eg_store_memory_get(t, r->tenant, r->mem->memory_id, &cur);
  if (e == EG_ENOTFOUND) return EG_OK; /* purged since: nothing to index */
  if (e) return e;
  if (cur->version == r->mem->version && cur->update_time_us == r->mem->update_time_us &&
      cur->index_version == r->mem->index_version) {
    e = eg_store_memory_put(t, r->tenant, &r->mem_new, cur, NULL);
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

static eg_err eg_rx_rewrite_message(eg_txn *t, const eg_rx_rec *r, const eg_rx_rec **checked,
                                    int *live) {
  eg_message_rec *cur;
  /* A session retired since keeps its messages until the sweeper purges
   * them: they get no new index entries. */
  eg_err e = eg_rx_session_live(t, r, checked, live);
  if (e || !*live) return e;
  e = eg_store_message_get(t, r->tenant, r->session_id, (uint64_t)r->msg->seq, &cur);
  if (e == EG_ENOTFOUND) return EG_OK; /* deleted since */
  if (e) return e;
  if (cur->index_version == r->msg->index_version &&
      cur->content_token.len == r->msg->content_token.len &&
      memcmp(cur->content_token.data, r->msg->content_token.data, cur->content_token.len) == 0) {
    e = eg_store_message_reindex(t, r->tenant, r->session_id, cur, &r->msg_new);
  }
  engram__storage__v1__message_record__free_unpacked(cur, NULL);
  return e;
}

static eg_err eg_rx_step_apply(eg_write_item *item, eg_txn *t) {
  eg_rx_step *s = (eg_rx_step *)item;
  const char *name = eg_reindex_name(s->index);
  eg_index_state_rec *cur;
  const eg_rx_rec *checked = NULL;
  int live = 0;
  eg_err e = eg_store_index_state_get(t, name, &cur);
  if (e == EG_ENOTFOUND) cur = NULL;
  else if (e) return e;
  if ((e = eg_rx_same_state(cur, &s->from))) goto out;
  for (size_t i = 0; i < s->n && !e; i++)
    e = s->index == EG_REINDEX_MEMORIES ? eg_rx_rewrite_memory(t, &s->recs[i])
                                        : eg_rx_rewrite_message(t, &s->recs[i], &checked, &live);
  if (e) goto out;
  eg_index_state_rec next = *cur;
  if (s->more) {
    next.cursor = (ProtobufCBinaryData){.len = s->last_len, .data = s->last};
    next.done = cur->done + s->visited;
  } else {
    /* The walk is through: every entry is at the target now. */
    next = (eg_index_state_rec)ENGRAM__STORAGE__V1__INDEX_STATE_RECORD__INIT;
    next.version = cur->target;
  }
  e = eg_store_index_state_put(t, name, &next);
out:
  if (cur) eg_state_free(cur);
  return e;
}

/* ---- the walk (on the thread, in a read txn) ------------------------------- */

/* A request of the step's own, to open sealed fields as the services do. */
static eg_req eg_rx_req(eg_rx_step *s, const char *tenant) {
  return (eg_req){.srv = s->rx.x->srv, .tenant = tenant, .arena = s->arena, .now_us = eg_now_us()};
}

/* Remembers a walked record's key (the cursor after it) and tenant; the
 * tenant's blind context into *ctx. */
static eg_err eg_rx_visit(eg_rx_step *s, const uint8_t *key, size_t key_len, const char *tenant,
                          const char **tenant_copy) {
  if (!(s->last = eg_arena_alloc(s->arena, key_len ? key_len : 1))) return EG_ENOMEM;
  memcpy(s->last, key, key_len);
  s->last_len = key_len;
  s->visited++;
  if (s->ctx_tenant && strcmp(s->ctx_tenant, tenant) == 0) {
    *tenant_copy = s->ctx_tenant;
    return EG_OK;
  }
  if (!(*tenant_copy = eg_arena_strndup(s->arena, tenant, strlen(tenant)))) return EG_ENOMEM;
  eg_req r = eg_rx_req(s, *tenant_copy);
  eg_err e = eg_blind_ctx_of(&r, &s->ctx);
  if (e == EG_OK) s->ctx_tenant = *tenant_copy;
  return e;
}

/* A field that does not open (tampered, or its key gone) cannot be
 * indexed: the record keeps its old entries and the job goes on (a
 * retry would stop it for good); every read of it fails alike. */
static int eg_rx_unreadable(eg_err e, const eg_req *r) {
  if (e != EG_ECORRUPT) return 0;
  eg_log(EG_LOG_WARN, "reindex: %s; left as it is", r->msg);
  return 1;
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
 * negation flag too. */
static eg_err eg_rx_memory(eg_rx_step *s, const char *tenant, const eg_memory_rec *rec) {
  eg_req r = eg_rx_req(s, tenant);
  char *text;
  size_t len;
  eg_err e = eg_field_open(&r, "memory", rec->memory_id, "text", &rec->text_token, &text, &len);
  if (eg_rx_unreadable(e, &r)) return EG_OK;
  if (e) return e;
  eg_rx_rec *x = &s->recs[s->n];
  *x = (eg_rx_rec){.tenant = tenant, .mem = rec, .mem_new = *rec};
  if ((e = eg_text_index(&r, s->ctx, text, len, &x->mem_new))) return e;
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
  eg_err e = eg_field_open(&r, "message", rid, "content", &rec->content_token, &text, &len);
  if (eg_rx_unreadable(e, &r)) return EG_OK;
  if (e) return e;
  eg_rx_rec *x = &s->recs[s->n];
  *x = (eg_rx_rec){.tenant = tenant, .session_id = s->s_id, .msg = rec, .msg_new = *rec};
  if ((e = eg_message_index_fields(s->arena, s->ctx, s->from.target, session->language,
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

/* One step of index i's job from state st (read by the thread): walks,
 * then writes through the writer. *walked: the records it walked (0 when
 * it failed). */
static eg_err eg_rx_step_run(eg_reindex *x, unsigned i, const eg_index_state_rec *st,
                             uint64_t *walked) {
  eg_rx_step s = {.rx = {.item = {.apply = eg_rx_step_apply}, .x = x},
                  .index = i,
                  .from = *st};
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
    if (i == EG_REINDEX_MEMORIES) {
      e = eg_store_memories_walk(x->reader, after, after_len, x->batch, eg_rx_memory_visit, &s,
                                 &s.more);
    } else {
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
    if (!s.more)
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
  eg_err e = eg_store_reader_begin(x->reader);
  for (unsigned i = 0; i < EG_REINDEX_INDEXES && e == EG_OK; i++)
    e = eg_state_get(x->reader, a, i, &st[i]);
  eg_store_reader_end(x->reader);
  int64_t sleep_ms = EG_REINDEX_IDLE_MS;
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
    int want = eg_rx_wants(x->srv->cfg, i, st[i]);
    control |= want == EG_RX_OFF || want == EG_RX_BEGIN;
    if (want == EG_RX_STEP && step < 0) step = (int)i;
  }
  /* A fenced primary may be deposed already: what it wrote now would only
   * part its log from the next primary's. */
  if (eg_repl_is_primary(x->srv->repl) && !eg_repl_fenced(x->srv->repl)) {
    uint64_t walked;
    if (control) {
      if (eg_rx_control_run(x) == EG_OK) sleep_ms = 0; /* the job's first step next */
    } else if (step >= 0 && eg_rx_step_run(x, (unsigned)step, st[step], &walked) == EG_OK) {
      /* --reindex-rate: the records just walked take this long. */
      sleep_ms = (int64_t)(walked * 1000 / (uint64_t)x->srv->cfg->reindex_rate);
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
  if ((e = eg_bgthread_start(&x->bg, eg_reindex_main, x, "reindex", err, errlen)) != EG_OK) {
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
    out->pending[i] = atomic_load_explicit(&x->pending[i], memory_order_relaxed);
  }
}
