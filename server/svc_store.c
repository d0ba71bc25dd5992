/* StoreService (proto/engram/v1/agent_state.proto): LangGraph's BaseStore
 * over storage/store_items.h. Values are sealed bound to (tenant,
 * namespace, key); their top-level pairs are kept as blind-index hashes
 * for filters; embeddings are stored as they come, for an exact cosine
 * ranking. An item past its expire_time is absent to every call, whether
 * the sweeper took it yet or not. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/v1/agent_state.pb-c.h"
#include "server/blind_key.h"
#include "server/convert.h"
#include "server/data_keys.h"
#include "server/json_terms.h"
#include "server/memory_score.h"
#include "server/memory_svc.h"
#include "server/service.h"
#include "server/store_svc.h"
#include "server/validate.h"

typedef Engram__V1__StoreItem eg_item_api;

static void eg_item_rec_free(void *p) { engram__storage__v1__store_item_record__free_unpacked(p, NULL); }

/* ==== checks ======================================================================= */

/* Checks labels[0..n) as a namespace (whole: one namespace, at least one
 * label; else a prefix, maybe empty) and encodes it into *out. */
static eg_err eg_ns_check(eg_req *r, const char *field, char *const *labels, size_t n, int whole,
                          eg_store_ns *out) {
  size_t total = 0;
  if (whole && n == 0) return eg_invalid(r->msg, sizeof r->msg, field, "must have at least one label");
  if (n > EG_STORE_NS_LABELS_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu labels, limit %d", n, EG_STORE_NS_LABELS_MAX);
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(labels[i]);
    if (len == 0) return eg_invalid(r->msg, sizeof r->msg, field, "label %zu is empty", i);
    if (len > EG_STORE_LABEL_MAX)
      return eg_invalid(r->msg, sizeof r->msg, field, "label %zu is %zu bytes, limit %d", i, len,
                        EG_STORE_LABEL_MAX);
    total += len;
  }
  if (total > EG_STORE_NS_BYTES_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "labels take %zu bytes in all, limit %d", total,
                      EG_STORE_NS_BYTES_MAX);
  return eg_store_ns_encode(labels, n, whole, out);
}

static eg_err eg_key_check(eg_req *r, const char *field, const char *key) {
  size_t len = strlen(key);
  if (len == 0) return eg_invalid(r->msg, sizeof r->msg, field, "must not be empty");
  if (len > EG_STORE_KEY_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu bytes, limit %d", len, EG_STORE_KEY_MAX);
  return EG_OK;
}

/* The hashes of a JSON object's pairs under ctx into an arena array. */
static eg_err eg_json_hashes(eg_req *r, const eg_blind_ctx *ctx, const char *field,
                             const char *json, uint64_t **out, size_t *n) {
  size_t len = strlen(json);
  *out = NULL;
  *n = 0;
  if (len > EG_STORE_VALUE_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu bytes, limit %d", len, EG_STORE_VALUE_MAX);
  uint64_t *h = EG_ARENA_ARRAY(r->arena, uint64_t, EG_STORE_PAIRS_MAX);
  if (!h) return EG_ENOMEM;
  eg_err e = eg_json_terms(ctx, field, json, len, h, EG_STORE_PAIRS_MAX, n, r->msg, sizeof r->msg);
  if (!e) *out = h;
  return e;
}

/* The stored item under (ns, key) into *out (the arena's), or EG_ENOTFOUND
 * naming it when there is none or it has expired (allow_expired 0). */
static eg_err eg_item_load(eg_req *r, eg_txn *t, const eg_store_ns *ns, const char *key,
                           int allow_expired, eg_item_rec **out) {
  eg_item_rec *rec;
  eg_err e = eg_store_item_get(t, r->tenant, ns, key, &rec);
  if (e == EG_OK && eg_arena_defer(r->arena, eg_item_rec_free, rec) != 0) return EG_ENOMEM;
  if (e == EG_OK && !allow_expired && eg_store_item_expired(rec, r->now_us)) e = EG_ENOTFOUND;
  if (e == EG_ENOTFOUND) snprintf(r->msg, sizeof r->msg, "key: no item '%s' in this namespace", key);
  if (e == EG_OK) *out = rec;
  return e;
}

/* rec as the API shows it, its value opened. labels[0..n) and key are
 * borrowed until the call ends. */
static eg_err eg_item_to_api(eg_req *r, const eg_store_ns *ns, char **labels, size_t n,
                             const char *key, const eg_item_rec *rec, eg_item_api **out) {
  eg_item_api *it = EG_ARENA_NEW(r->arena, eg_item_api);
  const char *rid = eg_item_record_id(r, ns->buf, ns->len, key);
  if (!it || !rid) return EG_ENOMEM;
  engram__v1__store_item__init(it);
  size_t len;
  /* Store items have no user: the tenant's own data key seals them. */
  eg_err e = eg_field_open(r, EG_DATA_KEY_TENANT_USER, "store_item", rid, "value",
                           &rec->value_token, &it->value_json, &len);
  if (e) return e;
  it->namespace_ = labels;
  it->n_namespace_ = n;
  it->key = (char *)key;
  it->create_time = eg_timestamp(r, rec->create_time_us);
  it->update_time = eg_timestamp(r, rec->update_time_us);
  if (rec->expire_time_us) it->expire_time = eg_timestamp(r, rec->expire_time_us);
  if (!it->create_time || !it->update_time || (rec->expire_time_us && !it->expire_time))
    return EG_ENOMEM;
  it->ttl_seconds = rec->ttl_seconds;
  *out = it;
  return EG_OK;
}

/* ==== PutItem ======================================================================== */

struct eg_put_state {
  const Engram__V1__PutItemRequest *in;
  eg_store_ns ns;
  eg_item_rec rec; /* sealed value, hashes, embedding, ttl: apply adds the times */
};

static eg_err eg_put_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__PutItemRequest *in = (const void *)msg;
  struct eg_put_state *st = EG_ARENA_NEW(r->arena, struct eg_put_state);
  if (!st) return EG_ENOMEM;
  st->in = in;
  engram__storage__v1__store_item_record__init(&st->rec);
  r->state = st;
  float *vec, norm;
  eg_err e;
  if ((e = eg_ns_check(r, "namespace", in->namespace_, in->n_namespace_, 1, &st->ns)) ||
      (e = eg_key_check(r, "key", in->key)))
    return e;
  /* ListNamespaces reads a "*" label as any label: an item under one could
   * never be matched as itself, so no item is put there. */
  for (size_t i = 0; i < in->n_namespace_; i++)
    if (strcmp(in->namespace_[i], "*") == 0)
      return eg_invalid(r->msg, sizeof r->msg, "namespace",
                        "label %zu is \"*\", the wildcard of ListNamespaces", i);
  if (!in->value_json[0]) return eg_invalid(r->msg, sizeof r->msg, "value_json", "must be a JSON object");
  eg_blind_ctx *ctx;
  if ((e = eg_blind_ctx_of(r, &ctx)) ||
      (e = eg_json_hashes(r, ctx, "value_json", in->value_json, &st->rec.value_hashes,
                          &st->rec.n_value_hashes)) ||
      (e = eg_embedding_check(r, "embedding", in->embedding, in->n_embedding, &vec, &norm)))
    return e;
  if (in->ttl_seconds < 0 || in->ttl_seconds > EG_STORE_TTL_MAX_S)
    return eg_invalid(r->msg, sizeof r->msg, "ttl_seconds", "must be in [0, %lld] (got %lld)",
                      EG_STORE_TTL_MAX_S, (long long)in->ttl_seconds);
  st->rec.ttl_seconds = in->ttl_seconds;
  st->rec.blind_key_id = r->blind_key_used;
  st->rec.embedding = (ProtobufCBinaryData){in->n_embedding * sizeof(float), (uint8_t *)vec};
  const char *rid = eg_item_record_id(r, st->ns.buf, st->ns.len, in->key);
  if (!rid) return EG_ENOMEM;
  return eg_field_seal(r, EG_DATA_KEY_TENANT_USER, "store_item", rid, "value", in->value_json,
                       strlen(in->value_json), &st->rec.value_token);
}

static eg_err eg_put_apply(eg_req *r, eg_txn *t) {
  const struct eg_put_state *st = r->state;
  eg_item_rec *prev = NULL, rec = st->rec;
  eg_err e = eg_field_sealed_live(r, EG_DATA_KEY_TENANT_USER, "store_item", st->in->key,
                                  &rec.value_token);
  if (e == EG_OK) e = eg_item_load(r, t, &st->ns, st->in->key, 1, &prev);
  if (e && e != EG_ENOTFOUND) return e;
  r->msg[0] = '\0';
  /* An expired item not swept yet is gone: this put starts a new one. */
  int live = prev && !eg_store_item_expired(prev, r->now_us);
  rec.create_time_us = live ? prev->create_time_us : r->now_us;
  rec.update_time_us = r->now_us;
  rec.expire_time_us = rec.ttl_seconds ? r->now_us + rec.ttl_seconds * 1000000 : 0;
  if ((e = eg_store_item_put(t, r->tenant, &st->ns, st->in->key, &rec, prev))) return e;
  return eg_item_to_api(r, &st->ns, st->in->namespace_, st->in->n_namespace_, st->in->key, &rec,
                        (eg_item_api **)&r->resp);
}

/* ==== GetItem ========================================================================= */

static eg_err eg_get_item(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__GetItemRequest *in = (const void *)msg;
  eg_store_ns ns;
  eg_item_rec *rec;
  eg_err e;
  if ((e = eg_ns_check(r, "namespace", in->namespace_, in->n_namespace_, 1, &ns)) ||
      (e = eg_key_check(r, "key", in->key)) || (e = eg_item_load(r, r->rtxn, &ns, in->key, 0, &rec)))
    return e;
  return eg_item_to_api(r, &ns, in->namespace_, in->n_namespace_, in->key, rec,
                        (eg_item_api **)&r->resp);
}

/* ==== DeleteItem ======================================================================= */

struct eg_del_state {
  const char *key;
  eg_store_ns ns;
};

static eg_err eg_del_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__DeleteItemRequest *in = (const void *)msg;
  struct eg_del_state *st = EG_ARENA_NEW(r->arena, struct eg_del_state);
  if (!st) return EG_ENOMEM;
  st->key = in->key;
  r->state = st;
  eg_err e = eg_ns_check(r, "namespace", in->namespace_, in->n_namespace_, 1, &st->ns);
  return e ? e : eg_key_check(r, "key", in->key);
}

static eg_err eg_del_apply(eg_req *r, eg_txn *t) {
  const struct eg_del_state *st = r->state;
  eg_item_rec *prev;
  Engram__V1__DeleteItemResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__DeleteItemResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__delete_item_response__init(out);
  r->resp = &out->base;
  eg_err e = eg_item_load(r, t, &st->ns, st->key, 1, &prev);
  if (e == EG_ENOTFOUND) {
    r->msg[0] = '\0';
    return EG_OK; /* deleted: false, nothing written */
  }
  if (e) return e; /* prev is set on EG_OK only */
  /* An expired item's keys go too; it was already absent to readers. */
  out->deleted = !eg_store_item_expired(prev, r->now_us);
  return eg_store_item_delete(t, r->tenant, &st->ns, st->key, prev);
}

/* ==== SearchItems ======================================================================= */

/* Where an item lies under its tenant: ns-enc | key. */
#define EG_ITEM_SUFFIX_MAX (EG_STORE_NS_ENC_MAX + EG_STORE_KEY_MAX)

/* One candidate of a search. */
typedef struct {
  int ranked;    /* it has an embedding of the query's dimensions */
  float score;   /* its cosine (ranked only) */
  int64_t update_us;
  uint16_t ns_len, len;
  uint8_t suffix[EG_ITEM_SUFFIX_MAX];
} eg_cand;

/* <0 if a comes before b: ranked ones by score, then newest update, then
 * byte order of where they lie (so the order is total and pages are
 * stable). */
static int eg_cand_cmp(const eg_cand *a, const eg_cand *b) {
  if (a->ranked != b->ranked) return a->ranked ? -1 : 1;
  if (a->ranked && a->score != b->score) return a->score > b->score ? -1 : 1;
  if (a->update_us != b->update_us) return a->update_us > b->update_us ? -1 : 1;
  size_t n = a->len < b->len ? a->len : b->len;
  int c = memcmp(a->suffix, b->suffix, n);
  return c ? c : (int)a->len - (int)b->len;
}

static int eg_cand_qcmp(const void *a, const void *b) { return eg_cand_cmp(a, b); }

typedef struct {
  eg_req *r;
  /* The filter's tokens under each read key (server/blind_key.h); an item
   * is compared with its own key's. */
  const eg_blind_read *keys;
  uint64_t *filter[2];
  size_t n_filter;
  const float *q; /* query embedding (aligned), NULL for none */
  size_t dim;
  float qnorm;
  float *scratch; /* dim floats: a stored vector, aligned */
  /* the k best so far, a heap with the worst at [0] */
  eg_cand *heap;
  size_t n, k;
  int oom;
} eg_search;

/* 1 if every hash of want (sorted) is in have (sorted). */
static int eg_hashes_cover(const uint64_t *have, size_t nh, const uint64_t *want, size_t nw) {
  size_t i = 0;
  for (size_t j = 0; j < nw; j++) {
    while (i < nh && have[i] < want[j]) i++;
    if (i == nh || have[i] != want[j]) return 0;
  }
  return 1;
}

static void eg_heap_down(eg_search *s, size_t i) {
  for (;;) {
    size_t w = i, a = 2 * i + 1, b = a + 1;
    if (a < s->n && eg_cand_cmp(&s->heap[a], &s->heap[w]) > 0) w = a;
    if (b < s->n && eg_cand_cmp(&s->heap[b], &s->heap[w]) > 0) w = b;
    if (w == i) return;
    eg_cand tmp = s->heap[i];
    s->heap[i] = s->heap[w];
    s->heap[w] = tmp;
    i = w;
  }
}

static void eg_heap_offer(eg_search *s, const eg_cand *c) {
  if (s->n < s->k) {
    size_t i = s->n++;
    s->heap[i] = *c;
    while (i > 0 && eg_cand_cmp(&s->heap[(i - 1) / 2], &s->heap[i]) < 0) {
      eg_cand tmp = s->heap[i];
      s->heap[i] = s->heap[(i - 1) / 2];
      s->heap[(i - 1) / 2] = tmp;
      i = (i - 1) / 2;
    }
  } else if (s->k && eg_cand_cmp(c, &s->heap[0]) < 0) {
    s->heap[0] = *c;
    eg_heap_down(s, 0);
  }
}

static int eg_search_visit(void *arg, const eg_item_ref *ref, const eg_item_rec *rec) {
  eg_search *s = arg;
  eg_cand c;
  unsigned k = eg_blind_read_pick(s->keys, rec->blind_key_id);
  if (eg_store_item_expired(rec, s->r->now_us) ||
      (s->n_filter && (k >= s->keys->n || !eg_hashes_cover(rec->value_hashes, rec->n_value_hashes,
                                                          s->filter[k], s->n_filter))))
    return 0;
  c.ranked = 0;
  c.score = 0;
  if (s->q && rec->embedding.len == s->dim * sizeof(float)) {
    memcpy(s->scratch, rec->embedding.data, rec->embedding.len);
    c.score = eg_cosine(eg_vec_dot(s->q, rec->embedding.data, s->dim), s->qnorm,
                        eg_vec_norm(s->scratch, s->dim));
    c.ranked = 1;
  }
  c.update_us = rec->update_time_us;
  size_t kl = strlen(ref->key);
  c.ns_len = (uint16_t)ref->ns_len;
  c.len = (uint16_t)(ref->ns_len + kl);
  memcpy(c.suffix, ref->ns, ref->ns_len);
  memcpy(c.suffix + ref->ns_len, ref->key, kl);
  eg_heap_offer(s, &c);
  return 0;
}

/* The page's items, opened, from the ranked candidates, within the reply
 * budget: truncated when it ended the page before the candidates did. */
static eg_err eg_search_reply(eg_req *r, eg_search *s, size_t offset) {
  Engram__V1__SearchItemsResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__SearchItemsResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__search_items_response__init(out);
  r->resp = &out->base;
  if (s->n <= offset) return EG_OK;
  qsort(s->heap, s->n, sizeof *s->heap, eg_cand_qcmp);
  out->items = EG_ARENA_ARRAY(r->arena, eg_item_api *, s->n - offset);
  if (!out->items) return EG_ENOMEM;
  eg_reply_budget budget;
  eg_reply_budget_init(&budget, r);
  for (size_t i = offset; i < s->n; i++) {
    const eg_cand *c = &s->heap[i];
    eg_store_ns ns = {.len = c->ns_len};
    memcpy(ns.buf, c->suffix, c->ns_len);
    char *key = eg_arena_alloc(r->arena, c->len - c->ns_len + 1u);
    char *buf = eg_arena_alloc(r->arena, c->ns_len);
    char **labels = EG_ARENA_ARRAY(r->arena, char *, EG_STORE_NS_LABELS_MAX);
    if (!key || !buf || !labels) return EG_ENOMEM;
    memcpy(key, c->suffix + c->ns_len, c->len - c->ns_len);
    key[c->len - c->ns_len] = '\0';
    int n = eg_store_ns_decode(ns.buf, ns.len, buf, labels, EG_STORE_NS_LABELS_MAX);
    if (n < 0) return EG_ECORRUPT;
    eg_item_rec *rec;
    eg_item_api *it;
    eg_err e = eg_item_load(r, r->rtxn, &ns, key, 0, &rec);
    if (!e) e = eg_item_to_api(r, &ns, labels, (size_t)n, key, rec, &it);
    if (e) return e;
    it->score = c->ranked ? c->score : 0;
    if (!eg_reply_budget_take(&budget, &it->base)) {
      out->truncated = 1; /* the caller goes on at offset + n_items */
      break;
    }
    out->items[out->n_items++] = it;
  }
  return EG_OK;
}

static eg_err eg_search_items(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__SearchItemsRequest *in = (const void *)msg;
  eg_store_ns prefix;
  eg_search s = {.r = r};
  eg_err e;
  if ((e = eg_ns_check(r, "namespace_prefix", in->namespace_prefix, in->n_namespace_prefix, 0,
                       &prefix)))
    return e;
  if (in->limit < 0 || in->limit > EG_SEARCH_ITEMS_LIMIT_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "limit", "must be in [0, %d] (got %d)",
                      EG_SEARCH_ITEMS_LIMIT_MAX, in->limit);
  if (in->offset < 0 || in->offset > EG_SEARCH_ITEMS_OFFSET_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "offset", "must be in [0, %d] (got %d)",
                      EG_SEARCH_ITEMS_OFFSET_MAX, in->offset);
  eg_blind_read keys;
  float *q;
  if ((e = eg_blind_read_ctxs(r, r->rtxn, &keys))) return e;
  for (unsigned k = 0; k < keys.n; k++)
    if ((e = eg_json_hashes(r, keys.ctx[k], "filter_json", in->filter_json, &s.filter[k],
                            &s.n_filter)))
      return e;
  if ((e = eg_embedding_check(r, "query_embedding", in->query_embedding, in->n_query_embedding,
                              &q, &s.qnorm)))
    return e;
  s.keys = &keys;
  s.q = q;
  s.dim = in->n_query_embedding;
  if (q && !(s.scratch = EG_ARENA_ARRAY(r->arena, float, s.dim))) return EG_ENOMEM;
  size_t limit = in->limit ? (size_t)in->limit : EG_SEARCH_ITEMS_LIMIT_DEFAULT;
  s.k = (size_t)in->offset + limit;
  if (!(s.heap = EG_ARENA_ARRAY(r->arena, eg_cand, s.k))) return EG_ENOMEM;
  int more;
  e = eg_store_items_scan(r->rtxn, r->tenant, &prefix, (size_t)r->srv->cfg->max_store_scan,
                          eg_search_visit, &s, &more);
  if (e) return e;
  /* A ranking from part of the items would be a wrong answer, not a
   * shorter one: past the bound the call fails and says how to narrow it. */
  if (more)
    return snprintf(r->msg, sizeof r->msg,
                    "namespace_prefix: more than %lld items lie under this prefix "
                    "(--max-store-scan); search a narrower prefix",
                    (long long)r->srv->cfg->max_store_scan),
           EG_ELIMIT;
  s.n = s.n < s.k ? s.n : s.k;
  return eg_search_reply(r, &s, (size_t)in->offset);
}

/* ==== ListNamespaces ====================================================================== */

typedef struct {
  eg_req *r;
  const Engram__V1__ListNamespacesRequest *in;
  size_t offset, limit, skipped;
  int64_t left; /* namespaces and items still to examine (--max-store-scan) */
  int over;     /* left ran out */
  eg_err err;
  Engram__V1__ListNamespacesResponse *out;
  eg_reply_budget budget;
  char **last; /* the last namespace listed (or skipped by offset) */
  size_t n_last;
  int have_last;
} eg_nslist;

/* 1 if labels[at..at+np) match path (where "*" matches any label). */
static int eg_path_match(char **labels, size_t at, char **path, size_t np) {
  for (size_t i = 0; i < np; i++)
    if (strcmp(path[i], "*") != 0 && strcmp(path[i], labels[at + i]) != 0) return 0;
  return 1;
}

static int eg_ns_conditions(const Engram__V1__ListNamespacesRequest *in, char **labels, size_t n) {
  for (size_t i = 0; i < in->n_match; i++) {
    const Engram__V1__NamespaceMatch *m = in->match[i];
    if (m->n_path > n) return 0;
    size_t at = m->type == ENGRAM__V1__NAMESPACE_MATCH__TYPE__TYPE_PREFIX ? 0 : n - m->n_path;
    if (!eg_path_match(labels, at, m->path, m->n_path)) return 0;
  }
  return 1;
}

typedef struct {
  eg_nslist *l;
  int found; /* an item that has not expired */
} eg_live;

static int eg_live_visit(void *arg, const eg_item_ref *ref, const eg_item_rec *rec) {
  eg_live *v = arg;
  (void)ref;
  v->l->left--;
  v->found = !eg_store_item_expired(rec, v->l->r->now_us);
  return v->found;
}

/* Whether the namespace has an item that has not expired into *live: one
 * without a TTL says so from the counts, else its items are looked at
 * (within l->left; l->over when that ran out first). */
static eg_err eg_ns_live(eg_nslist *l, const uint8_t *enc, size_t len, uint64_t permanent,
                         int *live) {
  eg_store_ns ns = {.len = len};
  eg_live v = {.l = l};
  int more;
  *live = permanent > 0;
  if (*live) return EG_OK;
  memcpy(ns.buf, enc, len);
  eg_err e = eg_store_items_scan(l->r->rtxn, l->r->tenant, &ns, (size_t)(l->left > 0 ? l->left : 0),
                                 eg_live_visit, &v, &more);
  *live = v.found;
  l->over = !v.found && more;
  return e;
}

static int eg_ns_visit(void *arg, const uint8_t *enc, size_t len, uint64_t count,
                       uint64_t permanent, eg_store_ns *seek) {
  eg_nslist *l = arg;
  eg_req *r = l->r;
  (void)count;
  if (l->left-- <= 0) {
    l->over = 1;
    return 1;
  }
  char *buf = eg_arena_alloc(r->arena, len);
  char **labels = EG_ARENA_ARRAY(r->arena, char *, EG_STORE_NS_LABELS_MAX);
  if (!buf || !labels) {
    l->err = EG_ENOMEM;
    return 1;
  }
  int n = eg_store_ns_decode(enc, len, buf, labels, EG_STORE_NS_LABELS_MAX);
  if (n <= 0) {
    l->err = EG_ECORRUPT;
    return 1;
  }
  int live;
  if (!eg_ns_conditions(l->in, labels, (size_t)n)) return 0;
  if ((l->err = eg_ns_live(l, enc, len, permanent, &live)) || l->over) return 1;
  if (!live) return 0;
  size_t d = l->in->max_depth > 0 && (size_t)l->in->max_depth < (size_t)n ? (size_t)l->in->max_depth
                                                                          : (size_t)n;
  int dup = l->have_last && l->n_last == d;
  for (size_t i = 0; dup && i < d; i++) dup = strcmp(l->last[i], labels[i]) == 0;
  if (!dup) {
    l->last = labels;
    l->n_last = d;
    l->have_last = 1;
    if (l->skipped < l->offset) {
      l->skipped++;
    } else {
      Engram__V1__Namespace *ns = EG_ARENA_NEW(r->arena, Engram__V1__Namespace);
      if (!ns) {
        l->err = EG_ENOMEM;
        return 1;
      }
      engram__v1__namespace__init(ns);
      ns->labels = labels;
      ns->n_labels = d;
      /* Never ends a page early in practice: EG_LIST_NS_LIMIT_MAX
       * namespaces of at most EG_STORE_NS_ENC_MAX bytes are about 0.3 MiB,
       * below the smallest --max-reply-bytes (1 MiB), so the reply has no
       * truncated flag. */
      if (!eg_reply_budget_take(&l->budget, &ns->base)) return 1;
      l->out->namespaces[l->out->n_namespaces++] = ns;
      if (l->out->n_namespaces == l->limit) return 1;
    }
  }
  if (l->in->max_depth <= 0 || d != (size_t)l->in->max_depth) return 0;
  /* Every namespace under these d labels cuts to them: jump past them all
   * (the prefix ends in 0x00; with 0x01 in its place it is the first key
   * after every namespace that starts with it). */
  if (eg_store_ns_encode(labels, d, 0, seek)) return 0;
  seek->buf[seek->len - 1] = 0x01;
  return 2;
}

static eg_err eg_list_namespaces(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__ListNamespacesRequest *in = (const void *)msg;
  eg_nslist l = {.r = r, .in = in, .left = r->srv->cfg->max_store_scan};
  eg_store_ns within, tmp;
  int have_within = 0;
  eg_err e;
  if (in->n_match > EG_LIST_NS_MATCH_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "match", "%zu conditions, limit %d", in->n_match,
                      EG_LIST_NS_MATCH_MAX);
  for (size_t i = 0; i < in->n_match; i++) {
    const Engram__V1__NamespaceMatch *m = in->match[i];
    char field[48];
    snprintf(field, sizeof field, "match[%zu].path", i);
    if (m->type != ENGRAM__V1__NAMESPACE_MATCH__TYPE__TYPE_PREFIX &&
        m->type != ENGRAM__V1__NAMESPACE_MATCH__TYPE__TYPE_SUFFIX)
      return eg_invalid(r->msg, sizeof r->msg, "match.type", "condition %zu must be TYPE_PREFIX or TYPE_SUFFIX", i);
    if ((e = eg_ns_check(r, field, m->path, m->n_path, 1, &tmp))) return e;
    if (m->type != ENGRAM__V1__NAMESPACE_MATCH__TYPE__TYPE_PREFIX || have_within) continue;
    /* The labels before the first wildcard narrow the scan to a range. */
    size_t lit = 0;
    while (lit < m->n_path && strcmp(m->path[lit], "*") != 0) lit++;
    if ((e = eg_store_ns_encode(m->path, lit, 0, &within))) return e;
    have_within = 1;
  }
  if (in->max_depth < 0) return eg_invalid(r->msg, sizeof r->msg, "max_depth", "must not be negative");
  if (in->limit < 0 || in->limit > EG_LIST_NS_LIMIT_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "limit", "must be in [0, %d] (got %d)",
                      EG_LIST_NS_LIMIT_MAX, in->limit);
  if (in->offset < 0 || in->offset > EG_LIST_NS_OFFSET_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "offset", "must be in [0, %d] (got %d)",
                      EG_LIST_NS_OFFSET_MAX, in->offset);
  l.limit = in->limit ? (size_t)in->limit : EG_LIST_NS_LIMIT_DEFAULT;
  l.offset = (size_t)in->offset;
  if (!(l.out = EG_ARENA_NEW(r->arena, Engram__V1__ListNamespacesResponse))) return EG_ENOMEM;
  engram__v1__list_namespaces_response__init(l.out);
  if (!(l.out->namespaces = EG_ARENA_ARRAY(r->arena, Engram__V1__Namespace *, l.limit)))
    return EG_ENOMEM;
  eg_reply_budget_init(&l.budget, r);
  r->resp = &l.out->base;
  const eg_store_ns *w = have_within ? &within : NULL;
  if ((e = eg_store_namespaces_scan(r->rtxn, r->tenant, w, w, eg_ns_visit, &l))) return e;
  if (l.err) return l.err;
  if (l.over)
    return snprintf(r->msg, sizeof r->msg,
                    "match: more than %lld namespaces and items to examine (--max-store-scan); "
                    "match a narrower prefix",
                    (long long)r->srv->cfg->max_store_scan),
           EG_ELIMIT;
  return EG_OK;
}

/* ==== RefreshItems ========================================================================== */

struct eg_refresh_state {
  size_t n;
  eg_store_ns *ns;
  const char **keys;
};

static eg_err eg_refresh_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__RefreshItemsRequest *in = (const void *)msg;
  struct eg_refresh_state *st = EG_ARENA_NEW(r->arena, struct eg_refresh_state);
  if (!st) return EG_ENOMEM;
  r->state = st;
  if (in->n_items > EG_REFRESH_ITEMS_MAX)
    return eg_invalid(r->msg, sizeof r->msg, "items", "%zu items, limit %d", in->n_items,
                      EG_REFRESH_ITEMS_MAX);
  st->n = in->n_items;
  st->ns = EG_ARENA_ARRAY(r->arena, eg_store_ns, st->n ? st->n : 1);
  st->keys = EG_ARENA_ARRAY(r->arena, const char *, st->n ? st->n : 1);
  if (!st->ns || !st->keys) return EG_ENOMEM;
  for (size_t i = 0; i < st->n; i++) {
    char field[40];
    eg_err e;
    snprintf(field, sizeof field, "items[%zu].namespace", i);
    if ((e = eg_ns_check(r, field, in->items[i]->namespace_, in->items[i]->n_namespace_, 1,
                         &st->ns[i])))
      return e;
    snprintf(field, sizeof field, "items[%zu].key", i);
    if ((e = eg_key_check(r, field, in->items[i]->key))) return e;
    st->keys[i] = in->items[i]->key;
  }
  return EG_OK;
}

static eg_err eg_refresh_apply(eg_req *r, eg_txn *t) {
  const struct eg_refresh_state *st = r->state;
  Engram__V1__RefreshItemsResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__RefreshItemsResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__refresh_items_response__init(out);
  r->resp = &out->base;
  for (size_t i = 0; i < st->n; i++) {
    eg_item_rec *rec;
    eg_err e = eg_item_load(r, t, &st->ns[i], st->keys[i], 0, &rec);
    if (e == EG_ENOTFOUND) continue; /* absent or expired: skipped */
    if (e) return e;
    /* No TTL, or renewed already by an earlier reference to the same
     * item in this request: a rewrite would only log the item again. */
    int64_t expire_us = r->now_us + rec->ttl_seconds * 1000000;
    if (!rec->ttl_seconds || rec->expire_time_us == expire_us) continue;
    eg_item_rec upd = *rec;
    upd.expire_time_us = expire_us;
    if ((e = eg_store_item_put(t, r->tenant, &st->ns[i], st->keys[i], &upd, rec))) return e;
    out->refreshed++;
  }
  r->msg[0] = '\0';
  return EG_OK;
}

/* ==== the table ============================================================================== */

#define EG_STORE_PATH(name) "/engram.v1.StoreService/" #name
#define EG_READ(name, req, fn) \
  {.path = EG_STORE_PATH(name), .in = &req, .role = EG_ROLE_AGENT, .read = fn}
#define EG_WRITE(name, req, prep, app) \
  {.path = EG_STORE_PATH(name), .in = &req, .role = EG_ROLE_AGENT, .prepare = prep, .apply = app}

const eg_method eg_store_methods[] = {
    EG_WRITE(PutItem, engram__v1__put_item_request__descriptor, eg_put_prepare, eg_put_apply),
    EG_READ(GetItem, engram__v1__get_item_request__descriptor, eg_get_item),
    EG_WRITE(DeleteItem, engram__v1__delete_item_request__descriptor, eg_del_prepare, eg_del_apply),
    EG_READ(SearchItems, engram__v1__search_items_request__descriptor, eg_search_items),
    EG_READ(ListNamespaces, engram__v1__list_namespaces_request__descriptor, eg_list_namespaces),
    EG_WRITE(RefreshItems, engram__v1__refresh_items_request__descriptor, eg_refresh_prepare,
             eg_refresh_apply),
    {.path = NULL},
};
