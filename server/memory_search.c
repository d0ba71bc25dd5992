/*
 * engram.v1.MemoryService reads over many memories: ListMemories and
 * SearchMemories, with the filters they share and the position map that
 * joins postings (also used by CreateMemory's de-duplication). See
 * svc_memory.c for the service as a whole.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engram/v1/memory.pb-c.h"
#include "server/convert.h"
#include "server/memory_score.h"
#include "server/memory_svc.h"
#include "server/memory_versions.h"
#include "server/text_terms.h"
#include "server/tokenizer.h"
#include "server/page_token.h"
#include "server/session_terms.h"
#include "server/service.h"
#include "server/validate.h"

static uint32_t eg_get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t eg_get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return (int64_t)v;
}

/* ==== position map (postings joins) ============================================ */

/* A position's hash, 8 bytes per step (every candidate of a search is
 * looked up, so this is on the hot path). */
static uint64_t eg_pos_hash(const uint8_t *p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ n, w;
  for (; n >= 8; p += 8, n -= 8) {
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
    h ^= h >> 32;
  }
  w = 0;
  memcpy(&w, p, n);
  h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
  return h ^ (h >> 29);
}

eg_err eg_pmap_init(eg_pmap *m, eg_arena *a, size_t cap) {
  *m = (eg_pmap){.a = a, .cap = 64, .ents_cap = 32};
  while (m->cap < 2 * cap) m->cap *= 2;
  m->slots = EG_ARENA_ARRAY(a, uint32_t, m->cap);
  m->ents = EG_ARENA_ARRAY(a, eg_pmap_ent, m->ents_cap);
  return m->slots && m->ents ? EG_OK : EG_ENOMEM;
}

/* The slot of p: holding its index + 1, or 0 (where it would go). */
static uint32_t *eg_pmap_slot(const eg_pmap *m, const uint8_t *p, size_t n) {
  for (size_t i = eg_pos_hash(p, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    uint32_t x = m->slots[i];
    if (!x || (m->ents[x - 1].len == n && memcmp(m->ents[x - 1].pos, p, n) == 0)) return &m->slots[i];
  }
}

const eg_pmap_ent *eg_pmap_find(const eg_pmap *m, const uint8_t *p, size_t n) {
  uint32_t x = *eg_pmap_slot(m, p, n);
  return x ? &m->ents[x - 1] : NULL;
}

eg_err eg_pmap_add(eg_pmap *m, const uint8_t *p, size_t n, uint32_t *idx) {
  uint32_t *slot = eg_pmap_slot(m, p, n);
  if (*slot) return *idx = *slot - 1, EG_OK;
  if (2 * (m->n + 1) > m->cap) {
    size_t cap = m->cap * 2;
    uint32_t *slots = EG_ARENA_ARRAY(m->a, uint32_t, cap);
    if (!slots) return EG_ENOMEM;
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < m->n; i++) *eg_pmap_slot(m, m->ents[i].pos, m->ents[i].len) = (uint32_t)i + 1;
    slot = eg_pmap_slot(m, p, n);
  }
  if (eg_arena_grow(m->a, (void **)&m->ents, &m->ents_cap, m->n + 1, sizeof *m->ents))
    return EG_ENOMEM;
  uint8_t *copy = eg_arena_alloc(m->a, n);
  if (!copy) return EG_ENOMEM;
  memcpy(copy, p, n);
  m->ents[m->n] = (eg_pmap_ent){.pos = copy, .len = n};
  *slot = (uint32_t)(m->n + 1);
  *idx = (uint32_t)m->n++;
  return EG_OK;
}

/* One term's postings go straight into the map; the entries it touched are
 * remembered so its idf (known once its df is) can be added to them. */
struct eg_join {
  eg_pmap *m;
  uint32_t *touched;
  size_t n, cap;
  eg_err err;
};

static int eg_join_visit(void *arg, const eg_memory_pos *pos) {
  struct eg_join *j = arg;
  uint32_t idx;
  if ((j->err = eg_pmap_add(j->m, pos->buf, pos->len, &idx))) return 1;
  if (j->n == j->cap) {
    size_t cap = j->cap ? 2 * j->cap : 256;
    uint32_t *t = EG_ARENA_ARRAY(j->m->a, uint32_t, cap);
    if (!t) return j->err = EG_ENOMEM, 1;
    if (j->n) memcpy(t, j->touched, j->n * sizeof *t);
    j->touched = t;
    j->cap = cap;
  }
  j->touched[j->n++] = idx;
  j->m->ents[idx].count++;
  return 0;
}

/* Adds every posting of the words to the maps (memory_svc.h): each word's
 * postings under each key into that key's map, its idf from all of them. */
eg_err eg_postings_join(eg_req *r, eg_txn *t, const char *user_id, unsigned n_keys,
                        const uint64_t *const *terms, size_t n, size_t n_docs, eg_pmap *const *m,
                        double *query_idf) {
  struct eg_join j[EG_BLIND_READ_MAX] = {{0}};
  *query_idf = 0;
  for (unsigned k = 0; k < n_keys; k++) j[k].m = m[k];
  for (size_t i = 0; i < n; i++) {
    size_t df = 0;
    for (unsigned k = 0; k < n_keys; k++) {
      j[k].n = 0;
      eg_err e = eg_store_memory_postings(t, r->tenant, user_id, terms[k][i], eg_join_visit, &j[k]);
      if (e == EG_OK) e = j[k].err;
      if (e != EG_OK) return e;
      df += j[k].n;
    }
    double idf = eg_idf(df, n_docs);
    *query_idf += idf;
    for (unsigned k = 0; k < n_keys; k++)
      for (size_t x = 0; x < j[k].n; x++) m[k]->ents[j[k].touched[x]].idf += idf;
  }
  return EG_OK;
}

int eg_pos_cmp(const void *a, const void *b) {
  const eg_memory_pos *x = a, *y = b;
  int c = memcmp(x->buf, y->buf, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

eg_err eg_pos_to_id(eg_req *r, const uint8_t *pos, size_t len, char **id) {
  if (len < 9) return EG_ECORRUPT;
  *id = eg_arena_strndup(r->arena, (const char *)pos + 8, len - 8);
  return *id ? EG_OK : EG_ENOMEM;
}

/* ==== filters ==================================================================== */

/* The hashed part of a filter under one read key. */
typedef struct {
  uint64_t category_hash;
  uint64_t *tags;
  uint64_t agent_hash, source_hash;
  uint64_t ns_hash;
  uint64_t md[EG_MEMORY_FILTER_METADATA_MAX];
} eg_mfilter_keyed;

typedef struct {
  unsigned type_mask, state_mask;
  int has_category;
  size_t n_tags;
  float min_importance;
  int64_t from_us, to_us; /* to_us 0: no upper bound */
  /* agent_id and source_session_id ("": any), whether a namespace_prefix
   * is asked for, how many metadata_equals pairs; their tokens (and the
   * category's and tags') under each read key (server/blind_key.h: two
   * while a blind-index rotation runs), a memory compared with those of
   * its own key. A meta of layout 3 or later holds the record's tokens;
   * older ones hold none, and their ids are read from the record (they
   * had no namespace or metadata). */
  const char *agent_id, *source_id;
  int has_ns;
  size_t n_md;
  const eg_blind_read *keys;
  eg_mfilter_keyed h[2];
} eg_mfilter;

/* eg_filter_match's answer for an older meta that passes but for the ids
 * a filter asks for: the record decides (eg_filter_pass). */
#define EG_MATCH_RECORD 2

/* Compiles f (may be NULL) under the read keys of keys (kept: it must
 * outlive *out). search: only ACTIVE may be asked for. */
static eg_err eg_filter_compile(eg_req *r, const eg_blind_read *keys,
                                const Engram__V1__MemoryFilter *f, int search, eg_mfilter *out) {
  char field[64];
  eg_err e;
  memset(out, 0, sizeof *out);
  out->keys = keys;
  out->state_mask = 1u << EG_MSTATE_ACTIVE;
  out->agent_id = out->source_id = "";
  if (!f) return EG_OK;
  for (size_t i = 0; i < f->n_types; i++) {
    snprintf(field, sizeof field, "filter.types[%zu]", i);
    if ((e = eg_check_type(r, field, f->types[i]))) return e;
    out->type_mask |= 1u << f->types[i];
  }
  if (f->n_states) out->state_mask = 0;
  for (size_t i = 0; i < f->n_states; i++) {
    int s = f->states[i];
    snprintf(field, sizeof field, "filter.states[%zu]", i);
    if (s < EG_MSTATE_ACTIVE || s > EG_MSTATE_SUPERSEDED)
      return eg_invalid(r->msg, sizeof r->msg, field,
                        "must be ACTIVE, DUPLICATE, DELETED or SUPERSEDED (got %d)", s);
    if (search && s != EG_MSTATE_ACTIVE)
      return eg_mem_invalid(r, field, "search returns only ACTIVE memories");
    out->state_mask |= 1u << s;
  }
  if ((e = eg_category_check(r, "filter.category", f->category))) return e;
  out->has_category = f->category[0] != 0;
  char **tags;
  if ((e = eg_tags_check(r, "filter.tags", f->tags, f->n_tags, EG_MEMORY_TAGS_MAX, &tags, &out->n_tags)))
    return e;
  if ((e = eg_check_unit(r, "filter.min_importance", f->min_importance))) return e;
  out->min_importance = f->min_importance;
  if ((e = eg_time_us(r, "filter.create_time_from", f->create_time_from, &out->from_us)) ||
      (e = eg_time_us(r, "filter.create_time_to", f->create_time_to, &out->to_us)))
    return e;
  if (out->to_us && out->to_us <= out->from_us)
    return eg_mem_invalid(r, "filter.create_time_to", "must be after create_time_from");
  if ((e = eg_validate_id("filter.agent_id", f->agent_id, 0, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("filter.source_session_id", f->source_session_id, 0, r->msg, sizeof r->msg)) ||
      (e = eg_namespace_check(r, "filter.namespace_prefix", f->namespace_prefix)))
    return e;
  out->agent_id = f->agent_id;
  out->source_id = f->source_session_id;
  out->has_ns = f->namespace_prefix[0] != 0;
  if (f->n_metadata_equals > EG_MEMORY_FILTER_METADATA_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "filter.metadata_equals", "%zu pairs, limit %d",
                      f->n_metadata_equals, EG_MEMORY_FILTER_METADATA_MAX);
  for (size_t i = 0; i < f->n_metadata_equals; i++) {
    snprintf(field, sizeof field, "filter.metadata_equals[%zu].key", i);
    if (!f->metadata_equals[i]->key[0]) return eg_mem_invalid(r, field, "required");
  }
  out->n_md = f->n_metadata_equals;
  for (unsigned k = 0; k < keys->n; k++) {
    const eg_blind_ctx *ctx = keys->ctx[k];
    eg_mfilter_keyed *h = &out->h[k];
    h->category_hash = eg_category_hash(ctx, f->category);
    h->tags = EG_ARENA_ARRAY(r->arena, uint64_t, out->n_tags ? out->n_tags : 1);
    if (!h->tags) return EG_ENOMEM;
    for (size_t i = 0; i < out->n_tags; i++) h->tags[i] = eg_tag_hash(ctx, tags[i]);
    h->agent_hash = eg_agent_hash(ctx, f->agent_id);
    h->source_hash = eg_source_hash(ctx, f->source_session_id);
    if (out->has_ns)
      h->ns_hash = eg_namespace_hash(ctx, f->namespace_prefix, strlen(f->namespace_prefix));
    for (size_t i = 0; i < out->n_md; i++) {
      const Engram__V1__MemoryFilter__MetadataEquals *p = f->metadata_equals[i];
      if ((e = eg_session_term(r, ctx, p->key, p->value, &h->md[i]))) return e;
    }
  }
  return EG_OK;
}

/* Whether f compares any token: then a memory under neither read key
 * (not expected) matches none of them. */
static int eg_filter_hashed(const eg_mfilter *f) {
  return f->has_category || f->n_tags || f->agent_id[0] || f->source_id[0] || f->has_ns || f->n_md;
}

/* 1 if hashes[0..n) (unaligned u64 LE, a meta's) holds h, else 0. */
static int eg_meta_has(const uint8_t *hashes, unsigned n, uint64_t h) {
  for (unsigned i = 0; i < n; i++)
    if (eg_memory_meta_hash(hashes, i) == h) return 1;
  return 0;
}

/* The filters on the fields layout 3 added, h the tokens of m's key: 1,
 * 0, or EG_MATCH_RECORD. */
static int eg_filter_match_ids(const eg_mfilter *f, const eg_mfilter_keyed *h,
                               const eg_memory_meta *m) {
  if (!m->has_filters) {
    if (f->has_ns || f->n_md) return 0; /* none then */
    return f->agent_id[0] || f->source_id[0] ? EG_MATCH_RECORD : 1;
  }
  if (f->agent_id[0] && m->agent_hash != h->agent_hash) return 0;
  if (f->source_id[0] && m->source_hash != h->source_hash) return 0;
  if (f->has_ns && !eg_meta_has(m->ns_hashes, m->n_ns, h->ns_hash)) return 0;
  for (size_t i = 0; i < f->n_md; i++)
    if (!eg_meta_has(m->md_hashes, m->n_md, h->md[i])) return 0;
  return 1;
}

static int eg_filter_match(const eg_mfilter *f, const eg_memory_meta *m, int64_t now_us) {
  if (eg_memory_expired(m->expire_us, now_us)) return 0;
  if (m->state < 1 || m->state > EG_MSTATE_SUPERSEDED || !(f->state_mask & (1u << m->state))) return 0;
  if (f->type_mask && (m->type < 1 || m->type > 6 || !(f->type_mask & (1u << m->type)))) return 0;
  if (m->importance < f->min_importance) return 0;
  if (m->create_us < f->from_us || (f->to_us && m->create_us >= f->to_us)) return 0;
  unsigned k = eg_blind_read_pick(f->keys, m->blind_key_id);
  if (k >= f->keys->n) return !eg_filter_hashed(f);
  const eg_mfilter_keyed *h = &f->h[k];
  if (f->has_category && m->category_hash != h->category_hash) return 0;
  for (size_t i = 0; i < f->n_tags; i++) {
    int found = 0;
    for (unsigned j = 0; j < m->n_tags && !found; j++)
      found = eg_memory_meta_tag(m, j) == h->tags[i];
    if (!found) return 0;
  }
  return eg_filter_match_ids(f, h, m);
}

/* Whether the memory at pos[0..len) with meta m passes f: 1 or 0; -1 with
 * *err set when its record, which an older meta leaves the ids to, does
 * not load. */
static int eg_filter_pass(eg_req *r, const eg_mfilter *f, const uint8_t *pos, size_t len,
                          const eg_memory_meta *m, eg_err *err) {
  int v = eg_filter_match(f, m, r->now_us);
  if (v != EG_MATCH_RECORD) return v;
  char id[EG_MEMORY_POS_MAX];
  eg_memory_rec *rec;
  if (len < 9) return *err = EG_ECORRUPT, -1;
  memcpy(id, pos + 8, len - 8);
  id[len - 8] = '\0';
  /* Freed here, not with the call: a listing may read many. */
  eg_err e = eg_store_memory_get(r->rtxn, r->tenant, id, &rec);
  if (e) return *err = e == EG_ENOTFOUND ? EG_ECORRUPT : e, -1;
  v = (!f->agent_id[0] || strcmp(rec->agent_id, f->agent_id) == 0) &&
      (!f->source_id[0] || strcmp(rec->source_session_id, f->source_id) == 0);
  engram__storage__v1__memory_record__free_unpacked(rec, NULL);
  return v;
}

/* ==== ListMemories ======================================================================== */

/* A list page token: kind byte ('n' newest first / 'i' importance), then
 * for 'i' the importance (f32 bits BE), then the last position shown. */
static eg_err eg_list_token_parse(eg_req *r, const ProtobufCMessage *in, uint8_t kind, float *imp,
                                  eg_memory_pos *pos) {
  uint8_t b[1 + 4 + EG_MEMORY_POS_MAX];
  size_t n, head = kind == 'i' ? 5 : 1;
  eg_err e = eg_page_token_open(r, in, b, sizeof b, &n);
  if (e != EG_OK) return e;
  if (n < head + 9 || b[0] != kind) goto bad;
  if (kind == 'i') {
    uint32_t bits = eg_get_be32(b + 1);
    memcpy(imp, &bits, 4);
  }
  pos->len = n - head;
  memcpy(pos->buf, b + head, pos->len);
  return EG_OK;
bad:
  return eg_mem_invalid(r, "page_token", "not a token this server issued for this order");
}

static eg_err eg_list_token(eg_req *r, const ProtobufCMessage *in, uint8_t kind, float imp,
                            const uint8_t *pos, size_t len, char **out) {
  uint8_t b[1 + 4 + EG_MEMORY_POS_MAX];
  _Static_assert(sizeof b <= EG_PAGE_POS_MAX, "a memory listing's position fits a page token");
  size_t n = 0;
  b[n++] = kind;
  if (kind == 'i') {
    uint32_t bits;
    memcpy(&bits, &imp, 4);
    for (int i = 0; i < 4; i++) b[n++] = (uint8_t)(bits >> (24 - 8 * i));
  }
  memcpy(b + n, pos, len);
  return eg_page_token_seal(r, in, b, n + len, out);
}

struct eg_list {
  eg_req *r;
  const eg_mfilter *f;
  eg_topk top;       /* importance order */
  eg_scored after;   /* importance order: the last item shown */
  int has_after;
  eg_memory_pos *items; /* newest first: positions collected */
  size_t n, want;
  eg_err err;
};

static int eg_list_newest_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m,
                                const uint8_t *vec) {
  struct eg_list *l = arg;
  int pass = eg_filter_pass(l->r, l->f, pos->buf, pos->len, m, &l->err);
  if (pass <= 0) return pass < 0;
  l->items[l->n++] = *pos;
  return l->n == l->want + 1;
}

static int eg_list_importance_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m,
                                    const uint8_t *vec) {
  struct eg_list *l = arg;
  int pass = eg_filter_pass(l->r, l->f, pos->buf, pos->len, m, &l->err);
  if (pass <= 0) return pass < 0;
  eg_scored c = {.score = m->importance, .importance = m->importance, .create_us = m->create_us,
                 .pos_len = pos->len};
  memcpy(c.pos, pos->buf, pos->len);
  if (l->has_after && eg_scored_cmp(&c, &l->after) <= 0) return 0;
  eg_topk_offer(&l->top, &c);
  return 0;
}

eg_err eg_list_memories(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__ListMemoriesRequest *in = (const void *)msg;
  const eg_config *cfg = r->srv->cfg;
  eg_blind_read keys;
  eg_mfilter f;
  struct eg_list l = {.r = r, .f = &f};
  eg_memory_pos after;
  int importance = in->order_by == ENGRAM__V1__MEMORY_ORDER__MEMORY_ORDER_IMPORTANCE;
  float after_imp = 0;
  eg_err e;
  if ((e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg))) return e;
  if (in->order_by < 0 || in->order_by > ENGRAM__V1__MEMORY_ORDER__MEMORY_ORDER_IMPORTANCE)
    return eg_invalid(r->msg, sizeof r->msg, "order_by", "unknown value %d", (int)in->order_by);
  if (in->page_size < 0) return eg_mem_invalid(r, "page_size", "must not be negative");
  l.want = in->page_size == 0 ? (size_t)cfg->default_page_size
                              : (size_t)(in->page_size > cfg->max_page_size ? cfg->max_page_size : in->page_size);
  if ((e = eg_blind_read_ctxs(r, r->rtxn, &keys)) ||
      (e = eg_filter_compile(r, &keys, in->filter, 0, &f)))
    return e;
  if (in->page_token[0] &&
      (e = eg_list_token_parse(r, &in->base, importance ? 'i' : 'n', &after_imp, &after)))
    return e;
  eg_scored *top = NULL;
  if (importance) {
    top = EG_ARENA_ARRAY(r->arena, eg_scored, l.want + 1);
    if (!top) return EG_ENOMEM;
    eg_topk_init(&l.top, top, l.want + 1);
    if (in->page_token[0]) {
      l.has_after = 1;
      l.after = (eg_scored){.score = after_imp, .importance = after_imp, .pos_len = after.len};
      l.after.create_us = eg_get_be64(after.buf);
      memcpy(l.after.pos, after.buf, after.len);
    }
    e = eg_store_memories_scan(r->rtxn, r->tenant, in->user_id, NULL, 0, 0, eg_list_importance_visit, &l);
    eg_topk_sort(&l.top);
  } else {
    if (!(l.items = EG_ARENA_ARRAY(r->arena, eg_memory_pos, l.want + 1))) return EG_ENOMEM;
    e = eg_store_memories_scan(r->rtxn, r->tenant, in->user_id, in->page_token[0] ? &after : NULL, 1,
                               0, eg_list_newest_visit, &l);
  }
  if (e == EG_EINVAL) return eg_mem_invalid(r, "page_token", "not a token this server issued");
  if (e || (e = l.err)) return e;
  size_t found = importance ? l.top.n : l.n;
  size_t shown = found > l.want ? l.want : found;
  Engram__V1__ListMemoriesResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__ListMemoriesResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__list_memories_response__init(out);
  out->memories = EG_ARENA_ARRAY(r->arena, Engram__V1__Memory *, shown ? shown : 1);
  if (!out->memories) return EG_ENOMEM;
  eg_reply_budget budget;
  eg_reply_budget_init(&budget, r);
  for (size_t i = 0; i < shown; i++) {
    const uint8_t *pos = importance ? top[i].pos : l.items[i].buf;
    size_t len = importance ? top[i].pos_len : l.items[i].len;
    char *id;
    eg_memory_rec *rec;
    if ((e = eg_pos_to_id(r, pos, len, &id)) || (e = eg_memory_load(r, r->rtxn, id, 1, &rec)) ||
        (e = eg_memory_to_api(r, r->rtxn, rec, in->include_embeddings, &out->memories[i])))
      return e == EG_ENOTFOUND ? EG_ECORRUPT : e;
    /* Past the reply budget the page ends early; the token resumes here. */
    if (!eg_reply_budget_take(&budget, &out->memories[i]->base)) break;
    out->n_memories++;
  }
  if ((found > l.want || out->n_memories < shown) && out->n_memories > 0) {
    size_t last = out->n_memories - 1;
    const uint8_t *pos = importance ? top[last].pos : l.items[last].buf;
    size_t len = importance ? top[last].pos_len : l.items[last].len;
    float imp = importance ? top[last].importance : 0;
    eg_err e = eg_list_token(r, &in->base, importance ? 'i' : 'n', imp, pos, len,
                             &out->next_page_token);
    if (e != EG_OK) return e;
  }
  r->resp = &out->base;
  return EG_OK;
}

/* ==== SearchMemories ========================================================================== */

struct eg_search {
  eg_req *r;
  const eg_mfilter *f;
  const eg_pmaps *kw; /* the query's words by version (memory_versions.h) */
  const float *q;   /* query embedding or NULL */
  size_t dim;
  float qnorm, ql1; /* its Euclidean and L1 norms */
  int16_t *q16;     /* the query quantized for the first pass, and its scale */
  float q16scale;
  eg_weights w;
  double half_life_s;
  float min_score;
  /* First pass: vector scores from the int8 copies in the meta, each with
   * its error bound; the best candidates are rescored exactly after. */
  int approx;
  int dropped;       /* a candidate was left out of `top` */
  float max_dropped; /* the highest score + err of those */
  eg_topk top;
  eg_err err; /* a record a filter read did not load */
};

static void eg_search_offer(struct eg_search *s, const eg_scored *c) {
  eg_topk *h = &s->top;
  if (h->n == h->k) {
    /* Full: either c or the current worst is left out. */
    const eg_scored *out = eg_scored_cmp(c, &h->items[0]) < 0 ? &h->items[0] : c;
    if (!s->dropped || out->score + out->err > s->max_dropped) s->max_dropped = out->score + out->err;
    s->dropped = 1;
  }
  eg_topk_offer(h, c);
}

/* Scores one memory. vec: its exact embedding (raw float32), or NULL to
 * use the int8 copy in the meta (approx pass) or no vector score. */
static void eg_search_consider(struct eg_search *s, const uint8_t *pos, size_t pos_len,
                               const eg_memory_meta *m, const uint8_t *vec) {
  if (m->state != EG_MSTATE_ACTIVE || s->err ||
      eg_filter_pass(s->r, s->f, pos, pos_len, m, &s->err) <= 0)
    return;
  double query_idf = 0;
  const eg_pmap_ent *ent = eg_pmaps_find(s->kw, eg_pmaps_key(s->kw, m), eg_pmaps_version(s->kw, m),
                                         pos, pos_len, &query_idf, NULL);
  int has_vec = s->q && (vec || (s->approx && m->dim));
  if (!ent && !has_vec) return; /* matches neither the words nor the vector */
  eg_scored c = {.create_us = m->create_us, .pos_len = pos_len, .importance = m->importance};
  if (ent) c.keyword = eg_keyword_score(ent->idf, query_idf, ent->count, m->n_terms);
  if (has_vec && vec) {
    float cos = eg_cosine(eg_vec_dot(s->q, vec, s->dim), s->qnorm, m->norm);
    c.vector = cos > 0 ? cos : 0;
  } else if (has_vec && !m->qvec) {
    /* A meta written before it carried an int8 copy: anything in [0, 1]. */
    c.vector = 0.5f;
    c.err = s->w.vector * 0.5f + 1e-6f;
  } else if (has_vec) {
    /* With q = q^ + dq and v = v^ + dv (each component of dq within
     * q16scale/2, of dv within qscale/2):
     * |q.v - q^.v^| <= |q.dv| + |dq.v^| <= ql1 qscale/2 + q16scale/2 qscale qsum.
     * max(0, .) does not widen it; the factor covers float rounding. */
    float dot = s->q16scale * m->qscale * (float)eg_vec_dot_i16_i8(s->q16, m->qvec, s->dim);
    float cos = eg_cosine(dot, s->qnorm, m->norm);
    c.vector = cos > 0 ? cos : 0;
    float bound = 0.5f * m->qscale * (s->ql1 + s->q16scale * (float)m->qsum);
    c.err = s->w.vector * (bound / (s->qnorm * m->norm)) * 1.001f + 1e-6f;
  }
  c.recency = eg_recency((double)(s->r->now_us - m->update_us) / 1e6, s->half_life_s);
  c.score = eg_hybrid_score(&s->w, c.keyword, c.vector, c.importance, c.recency);
  if (c.score + c.err < s->min_score) return;
  memcpy(c.pos, pos, pos_len);
  eg_search_offer(s, &c);
}

static int eg_search_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m,
                           const uint8_t *vec) {
  struct eg_search *s = arg;
  eg_search_consider(s, pos->buf, pos->len, m, vec);
  return s->err != EG_OK;
}

/* The request's weights (defaults when unset), scaled to sum to 1. */
static eg_err eg_search_weights(eg_req *r, const Engram__V1__SearchWeights *w, eg_weights *out) {
  static const float def[4] = {EG_W_KEYWORD_DEFAULT, EG_W_VECTOR_DEFAULT, EG_W_IMPORTANCE_DEFAULT,
                               EG_W_RECENCY_DEFAULT};
  static const char *const names[4] = {"weights.keyword", "weights.vector", "weights.importance",
                                       "weights.recency"};
  if (!w) return eg_weights_normalize(def, out) == 0 ? EG_OK : EG_EINVAL;
  const float v[4] = {w->keyword, w->vector, w->importance, w->recency};
  for (int i = 0; i < 4; i++)
    if (!isfinite(v[i]) || v[i] < 0) return eg_mem_invalid(r, names[i], "must be finite and >= 0");
  if (eg_weights_normalize(v, out) != 0) return eg_mem_invalid(r, "weights", "must not all be 0");
  return EG_OK;
}

static eg_err eg_search_check(eg_req *r, const Engram__V1__SearchMemoriesRequest *in, struct eg_search *s,
                              size_t *k) {
  eg_err e;
  float *q;
  if ((e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg))) return e;
  if (in->top_k < 0 || in->top_k > EG_TOP_K_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "top_k", "must be 1..%d, or 0 for %d (got %d)",
                      EG_TOP_K_MAX, EG_TOP_K_DEFAULT, in->top_k);
  *k = in->top_k ? (size_t)in->top_k : EG_TOP_K_DEFAULT;
  if ((int64_t)strlen(in->query) > r->srv->cfg->max_content_bytes)
    return eg_invalid(r->msg, sizeof r->msg, "query", "%zu bytes, limit %lld", strlen(in->query),
                      (long long)r->srv->cfg->max_content_bytes);
  if (!in->query[0] && !in->n_embedding)
    return eg_mem_invalid(r, "query", "a query or an embedding (or both) is required");
  if ((e = eg_embedding_check(r, "embedding", in->embedding, in->n_embedding, &q, &s->qnorm)) ||
      (e = eg_dim_check(r, r->rtxn, in->user_id, "embedding", in->n_embedding)) ||
      (e = eg_search_weights(r, in->weights, &s->w)) ||
      (e = eg_check_unit(r, "min_score", in->min_score)))
    return e;
  if (!isfinite(in->recency_half_life_seconds) || in->recency_half_life_seconds < 0)
    return eg_mem_invalid(r, "recency_half_life_seconds", "must be finite and >= 0");
  s->q = q;
  s->dim = in->n_embedding;
  for (size_t i = 0; i < s->dim; i++) s->ql1 += fabsf(q[i]);
  s->half_life_s = in->recency_half_life_seconds > 0 ? in->recency_half_life_seconds
                                                     : EG_RECENCY_HALF_LIFE_DEFAULT_S;
  s->min_score = in->min_score;
  return EG_OK;
}

/* Keyword-only search: the candidates are the memories sharing a word
 * (of the query read by their own key and version: each is considered
 * once). */
static eg_err eg_search_postings(eg_req *r, const char *user_id, struct eg_search *s,
                                 const eg_pmaps *kw) {
  for (unsigned k = 0; k < kw->tv->keys->n; k++)
  for (unsigned v = kw->tv->from; v <= EG_TOKENIZER_VERSION; v++) {
    for (size_t i = 0; i < kw->m[k][v].n; i++) {
      const eg_pmap_ent *ent = &kw->m[k][v].ents[i];
      eg_memory_pos pos;
      eg_memory_meta m;
      memcpy(pos.buf, ent->pos, ent->len);
      pos.len = ent->len;
      eg_err e = eg_store_memory_meta_at(r->rtxn, r->tenant, user_id, &pos, 0, &m, NULL);
      if (e == EG_ENOTFOUND) continue;
      if (e) return e;
      if (eg_pmaps_key(kw, &m) == k && eg_pmaps_version(kw, &m) == v)
        eg_search_consider(s, pos.buf, pos.len, &m, NULL);
    }
  }
  return s->err;
}

/* Vector search, exact but fast: a first pass over the meta values ranks
 * every memory with its int8 vector (a quarter of the bytes of float32),
 * keeping the 4k + 16 best with their error bounds; those are rescored
 * with their float32 vectors into the final top k. If any memory the first
 * pass left out could still (by its bound) reach the final k-th score, the
 * search runs again exactly over every vector: the results are always what
 * the exact scan gives. */
static eg_err eg_search_vector(eg_req *r, const char *user_id, struct eg_search *s, eg_scored *items,
                               size_t k) {
  size_t k1 = 4 * k + 16;
  eg_scored *pre = EG_ARENA_ARRAY(r->arena, eg_scored, k1);
  if (!pre || !(s->q16 = EG_ARENA_ARRAY(r->arena, int16_t, s->dim))) return EG_ENOMEM;
  s->q16scale = eg_vec_quantize16(s->q, s->dim, s->q16);
  eg_topk_init(&s->top, pre, k1);
  s->approx = 1;
  eg_err e = eg_store_memories_scan(r->rtxn, r->tenant, user_id, NULL, 0, 0, eg_search_visit, s);
  if (e) return e;
  int dropped = s->dropped;
  float max_dropped = s->max_dropped;
  eg_topk first = s->top;
  s->approx = 0;
  s->dropped = 0;
  eg_topk_init(&s->top, items, k);
  for (size_t i = 0; i < first.n; i++) {
    const eg_scored *c = &pre[i];
    if (c->err == 0) {
      if (c->score >= s->min_score) eg_topk_offer(&s->top, c);
      continue;
    }
    eg_memory_pos pos;
    eg_memory_meta m;
    const uint8_t *vec;
    memcpy(pos.buf, c->pos, c->pos_len);
    pos.len = c->pos_len;
    if ((e = eg_store_memory_meta_at(r->rtxn, r->tenant, user_id, &pos, 1, &m, &vec))) return e;
    eg_search_consider(s, pos.buf, pos.len, &m, vec);
  }
  if (s->err) return s->err;
  /* The k-th exact score (the heap's root is its worst). */
  if (!dropped || (s->top.n == k && max_dropped < s->top.items[0].score)) return EG_OK;
  eg_topk_init(&s->top, items, k);
  return eg_store_memories_scan(r->rtxn, r->tenant, user_id, NULL, 0, 1, eg_search_visit, s);
}

eg_err eg_search_memories(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__SearchMemoriesRequest *in = (const void *)msg;
  struct eg_search s = {.r = r};
  eg_blind_read keys;
  eg_mfilter f;
  eg_terms_versions tv;
  eg_pmaps kw;
  eg_memory_counters cnt;
  size_t k = 0;
  eg_err e;
  if ((e = eg_search_check(r, in, &s, &k)) || (e = eg_blind_read_ctxs(r, r->rtxn, &keys)) ||
      (e = eg_filter_compile(r, &keys, in->filter, 1, &f)) ||
      (e = eg_store_memory_counters(r->rtxn, r->tenant, in->user_id, &cnt)))
    return e;
  s.f = &f;
  /* The query read by each version the memories' entries may be at. */
  size_t n_docs = cnt.count[1] + cnt.count[2] + cnt.count[3];
  if ((e = eg_query_versions(r, r->rtxn, &keys, in->language, in->query, strlen(in->query), &tv)) ||
      (e = eg_pmaps_join(r, r->rtxn, in->user_id, &tv, n_docs, &kw)))
    return e;
  s.kw = &kw;
  eg_scored *items = EG_ARENA_ARRAY(r->arena, eg_scored, k);
  if (!items) return EG_ENOMEM;
  eg_topk_init(&s.top, items, k);
  /* With a query vector every memory is a candidate: see eg_search_vector.
   * Words alone: look up the memories sharing a word, unless they are a
   * large share of the user's (common words), where one sequential scan of
   * the meta values beats that many point lookups. */
  if (s.q)
    e = eg_search_vector(r, in->user_id, &s, items, k);
  else if (kw.n * EG_SCAN_SHARE > n_docs)
    e = eg_store_memories_scan(r->rtxn, r->tenant, in->user_id, NULL, 0, 0, eg_search_visit, &s);
  else
    e = eg_search_postings(r, in->user_id, &s, &kw);
  if (e || (e = s.err)) return e;
  eg_topk_sort(&s.top);
  Engram__V1__SearchMemoriesResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__SearchMemoriesResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__search_memories_response__init(out);
  out->results = EG_ARENA_ARRAY(r->arena, Engram__V1__SearchResult *, s.top.n ? s.top.n : 1);
  if (!out->results) return EG_ENOMEM;
  /* The best results that fit the reply budget: fewer than top_k when
   * they would not (large texts, include_embeddings). */
  eg_reply_budget budget;
  eg_reply_budget_init(&budget, r);
  for (size_t i = 0; i < s.top.n; i++) {
    const eg_scored *c = &items[i];
    Engram__V1__SearchResult *res = EG_ARENA_NEW(r->arena, Engram__V1__SearchResult);
    char *id;
    eg_memory_rec *rec;
    if (!res) return EG_ENOMEM;
    engram__v1__search_result__init(res);
    if ((e = eg_pos_to_id(r, c->pos, c->pos_len, &id)) || (e = eg_memory_load(r, r->rtxn, id, 1, &rec)) ||
        (e = eg_memory_to_api(r, r->rtxn, rec, in->include_embeddings, &res->memory)))
      return e == EG_ENOTFOUND ? EG_ECORRUPT : e;
    res->score = c->score;
    res->keyword_score = c->keyword;
    res->vector_score = c->vector;
    res->importance_score = c->importance;
    res->recency_score = c->recency;
    if (!eg_reply_budget_take(&budget, &res->base)) break;
    out->results[out->n_results++] = res;
  }
  r->resp = &out->base;
  return EG_OK;
}
