/*
 * engram.v1.MemoryService: typed long-term memories with blind-index
 * keyword search, vector search, write-time de-duplication and quotas.
 *
 * Reads (Get, List, Search) run on the worker; writes are prepare (worker:
 * validation, sealing the text, hashing its words) + apply (writer: the
 * de-duplication, quota and every put in one nested txn). Search and
 * de-duplication read only the fixed-layout meta, the raw vectors and the
 * postings of storage/memories.h; records are decoded only for what is
 * returned.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engram/storage/v1/memory_records.pb-c.h"
#include "engram/v1/memory.pb-c.h"
#include "server/blind_key.h"
#include "server/convert.h"
#include "server/ids.h"
#include "server/memory_score.h"
#include "server/memory_svc.h"
#include "server/memory_versions.h"
#include "server/session_terms.h"
#include "server/text_terms.h"
#include "server/tokenizer.h"
#include "server/service.h"
#include "server/validate.h"

#define EG_CATEGORY_MAX 256
#define EG_TAG_MAX 128

/* ==== shared helpers ========================================================== */

eg_err eg_mem_invalid(eg_req *r, const char *field, const char *what) {
  return eg_invalid(r->msg, sizeof r->msg, field, "%s", what);
}

static void eg_memory_rec_free(void *p) { engram__storage__v1__memory_record__free_unpacked(p, NULL); }

int eg_memory_expired(int64_t expire_us, int64_t now_us) { return expire_us && expire_us <= now_us; }

eg_err eg_memory_load(eg_req *r, eg_txn *t, const char *memory_id, int allow_expired,
                      eg_memory_rec **out) {
  eg_memory_rec *rec;
  eg_err e = eg_store_memory_get(t, r->tenant, memory_id, &rec);
  if (e == EG_OK && eg_arena_defer(r->arena, eg_memory_rec_free, rec) != 0) return EG_ENOMEM;
  if (e == EG_OK && !allow_expired && eg_memory_expired(rec->expire_time_us, r->now_us))
    e = EG_ENOTFOUND;
  if (e == EG_ENOTFOUND) {
    snprintf(r->msg, sizeof r->msg, "memory_id: no memory '%s'", memory_id);
    return e;
  }
  if (e == EG_OK) *out = rec;
  return e;
}

eg_err eg_check_unit(eg_req *r, const char *field, float v) {
  if (!(v >= 0.0f && v <= 1.0f))
    return eg_invalid(r->msg, sizeof r->msg, field, "must be in [0, 1] (got %g)", (double)v);
  return EG_OK;
}

eg_err eg_check_type(eg_req *r, const char *field, int type) {
  if (type <= ENGRAM__V1__MEMORY_TYPE__MEMORY_TYPE_UNSPECIFIED ||
      type > ENGRAM__V1__MEMORY_TYPE__MEMORY_TYPE_EMOTION)
    return eg_invalid(r->msg, sizeof r->msg, field,
                      "must be PERSON, PREFERENCE, EVENT, TOPIC, FACT or EMOTION (got %d)", type);
  return EG_OK;
}

/* Checks an embedding and copies it (aligned) into the arena. */
eg_err eg_embedding_check(eg_req *r, const char *field, const float *v, size_t n, float **out,
                          float *norm) {
  *out = NULL;
  *norm = 0;
  if (n == 0) return EG_OK;
  if (n > EG_MEMORY_DIM_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu dimensions, limit %d", n, EG_MEMORY_DIM_MAX);
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(v[i]))
      return eg_invalid(r->msg, sizeof r->msg, field, "value %zu is not finite", i);
    if (fabsf(v[i]) > EG_EMBEDDING_VALUE_MAX)
      return eg_invalid(r->msg, sizeof r->msg, field, "value %zu: magnitude above %g", i,
                        EG_EMBEDDING_VALUE_MAX);
  }
  *norm = eg_vec_norm(v, n);
  if (!(*norm > 0))
    return eg_mem_invalid(r, field, "must not be all zeros (cosine needs a direction)");
  if (*norm < EG_EMBEDDING_NORM_MIN)
    return eg_invalid(r->msg, sizeof r->msg, field, "norm below %g (cosine needs a direction)",
                      EG_EMBEDDING_NORM_MIN);
  float *copy = EG_ARENA_ARRAY(r->arena, float, n);
  if (!copy) return EG_ENOMEM;
  memcpy(copy, v, n * sizeof *copy);
  *out = copy;
  return EG_OK;
}

eg_err eg_dim_check(eg_req *r, eg_txn *t, const char *user_id, const char *field, size_t dim) {
  eg_memory_counters c;
  if (!dim) return EG_OK;
  eg_err e = eg_store_memory_counters(t, r->tenant, user_id, &c);
  if (e == EG_OK && c.dim && c.dim != dim)
    return eg_invalid(r->msg, sizeof r->msg, field,
                      "%zu dimensions, but this user's embeddings have %u", dim, (unsigned)c.dim);
  return e;
}

eg_err eg_time_us(eg_req *r, const char *field, const Google__Protobuf__Timestamp *ts, int64_t *us) {
  *us = 0;
  if (!ts) return EG_OK;
  if (ts->seconds < 0 || ts->seconds > 253402300799LL || ts->nanos < 0 || ts->nanos > 999999999)
    return eg_mem_invalid(r, field, "not a valid time (0001..9999, nanos 0..999999999, not before 1970)");
  *us = ts->seconds * 1000000 + ts->nanos / 1000;
  return EG_OK;
}

_Static_assert(EG_CATEGORY_MAX <= EG_LABEL_HASH_MAX && EG_TAG_MAX <= EG_LABEL_HASH_MAX,
               "eg_label_hash takes a category and a tag");

uint64_t eg_category_hash(const eg_blind_ctx *ctx, const char *category) {
  return category[0] ? eg_label_hash(ctx, 'c', category, strlen(category)) : 0;
}

uint64_t eg_tag_hash(const eg_blind_ctx *ctx, const char *tag) {
  return eg_label_hash(ctx, 't', tag, strlen(tag));
}

eg_err eg_category_check(eg_req *r, const char *field, const char *category) {
  if (strlen(category) > EG_CATEGORY_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "longer than %d bytes", EG_CATEGORY_MAX);
  return EG_OK;
}

/* Checks tags (each 1..128 bytes, at most max) and drops repeats, keeping
 * the first of each. */
eg_err eg_tags_check(eg_req *r, const char *field, char **tags, size_t n, size_t max,
                     char ***out, size_t *nout) {
  /* Dropping repeats is quadratic: bound n first (the wire walk already
   * does, this keeps the function safe on its own). */
  if (n > EG_MEMORY_TAGS_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu tags given, limit %d", n, EG_MEMORY_TAGS_MAX);
  char **keep = EG_ARENA_ARRAY(r->arena, char *, n ? n : 1);
  size_t k = 0;
  if (!keep) return EG_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(tags[i]);
    if (len == 0 || len > EG_TAG_MAX)
      return eg_invalid(r->msg, sizeof r->msg, field, "tag %zu: must be 1..%d bytes", i, EG_TAG_MAX);
    int dup = 0;
    for (size_t j = 0; j < k && !dup; j++) dup = strcmp(keep[j], tags[i]) == 0;
    if (!dup) keep[k++] = tags[i];
  }
  if (k > max) return eg_invalid(r->msg, sizeof r->msg, field, "%zu tags, limit %zu", k, max);
  *out = keep;
  *nout = k;
  return EG_OK;
}

/* Seals {category, tags} for memory_id (under rec->user_id's data key) and
 * hashes them for filtering. on_writer: in an apply, under the key only if
 * it exists (eg_field_seal_existing: the writer never makes one). */
static eg_err eg_labels_seal(eg_req *r, const eg_blind_ctx *ctx, const char *memory_id,
                             const char *category, char **tags, size_t n, int on_writer,
                             eg_memory_rec *rec) {
  rec->category_hash = eg_category_hash(ctx, category);
  rec->n_tag_hashes = n;
  rec->tag_hashes = EG_ARENA_ARRAY(r->arena, uint64_t, n ? n : 1);
  if (!rec->tag_hashes) return EG_ENOMEM;
  for (size_t i = 0; i < n; i++) rec->tag_hashes[i] = eg_tag_hash(ctx, tags[i]);
  rec->labels_token.len = 0;
  rec->labels_token.data = NULL;
  if (!category[0] && !n) return EG_OK;
  Engram__Storage__V1__MemoryLabels l = ENGRAM__STORAGE__V1__MEMORY_LABELS__INIT;
  l.category = (char *)category;
  l.tags = tags;
  l.n_tags = n;
  size_t len = engram__storage__v1__memory_labels__get_packed_size(&l);
  uint8_t *buf = eg_arena_alloc(r->arena, len ? len : 1);
  if (!buf) return EG_ENOMEM;
  engram__storage__v1__memory_labels__pack(&l, buf);
  return (on_writer ? eg_field_seal_existing : eg_field_seal)(r, rec->user_id, "memory", memory_id,
                                                             "labels", buf, len,
                                                             &rec->labels_token);
}

static void eg_labels_free(void *p) { engram__storage__v1__memory_labels__free_unpacked(p, NULL); }

/* Opens rec's labels: *category ("" if none) and tags (arena/deferred). */
static eg_err eg_labels_open(eg_req *r, const eg_memory_rec *rec, char **category, char ***tags,
                             size_t *n) {
  char *pt;
  size_t len;
  *category = "";
  *tags = NULL;
  *n = 0;
  eg_err e = eg_field_open(r, rec->user_id, "memory", rec->memory_id, "labels", &rec->labels_token,
                           &pt, &len);
  if (e != EG_OK || len == 0) return e;
  Engram__Storage__V1__MemoryLabels *l =
      engram__storage__v1__memory_labels__unpack(NULL, len, (const uint8_t *)pt);
  if (!l) {
    snprintf(r->msg, sizeof r->msg, "memory %s: labels do not decode", rec->memory_id);
    return EG_ECORRUPT;
  }
  if (eg_arena_defer(r->arena, eg_labels_free, l) != 0) return EG_ENOMEM;
  *category = l->category;
  *tags = l->tags;
  *n = l->n_tags;
  return EG_OK;
}

eg_err eg_text_index(eg_req *r, const eg_blind_ctx *ctx, const char *text, size_t len,
                     eg_memory_rec *rec) {
  uint64_t *terms = EG_ARENA_ARRAY(r->arena, uint64_t, EG_TEXT_TERMS_MAX);
  int negated;
  if (!terms) return EG_ENOMEM;
  eg_err e = eg_text_terms(ctx, EG_TOKENIZER_VERSION, rec->language, text, len, terms, NULL,
                           EG_TEXT_TERMS_MAX, &rec->n_term_hashes, NULL, &negated);
  if (e != EG_OK) return e;
  rec->term_hashes = terms;
  rec->index_version = EG_TOKENIZER_VERSION;
  rec->flags = negated ? EG_MEMORY_F_NEGATED : 0;
  return EG_OK;
}

eg_err eg_memory_blind_rehash(eg_req *r, const eg_blind_ctx *ctx, eg_memory_rec *rec) {
  char *text, *category, **tags;
  size_t len, n;
  Engram__V1__Memory md = ENGRAM__V1__MEMORY__INIT;
  eg_err e = eg_field_open(r, rec->user_id, "memory", rec->memory_id, "text", &rec->text_token,
                           &text, &len);
  if (e || (e = eg_text_index(r, ctx, text, len, rec)) ||
      (e = eg_labels_open(r, rec, &category, &tags, &n)))
    return e;
  rec->category_hash = eg_category_hash(ctx, category);
  rec->n_tag_hashes = n;
  if (!(rec->tag_hashes = EG_ARENA_ARRAY(r->arena, uint64_t, n ? n : 1))) return EG_ENOMEM;
  for (size_t i = 0; i < n; i++) rec->tag_hashes[i] = eg_tag_hash(ctx, tags[i]);
  eg_memory_ids_hash(ctx, rec);
  if ((e = eg_memory_namespace_set(r, ctx, rec->namespace_, rec)) ||
      (e = eg_memory_metadata_open(r, rec, &md)))
    return e;
  /* eg_session_terms takes the write key itself: the same as ctx's. */
  if ((e = eg_session_terms(r, (eg_kv_entry **)md.metadata, md.n_metadata, &rec->metadata_hashes,
                            &rec->n_metadata_hashes)))
    return e;
  rec->blind_key_id = r->blind_key_used;
  return EG_OK;
}

/* Seals the text for memory_id (under rec->user_id's data key) and
 * computes its blind terms (in rec->language: set it first). */
static eg_err eg_text_seal(eg_req *r, const eg_blind_ctx *ctx, const char *memory_id,
                           const char *text, eg_memory_rec *rec) {
  size_t len = strlen(text);
  eg_err e = eg_text_index(r, ctx, text, len, rec);
  return e ? e
           : eg_field_seal(r, rec->user_id, "memory", memory_id, "text", text, len,
                           &rec->text_token);
}

static eg_err eg_text_check(eg_req *r, const char *field, const char *text) {
  size_t len = strlen(text);
  if (len == 0) return eg_mem_invalid(r, field, "required (non-empty)");
  if ((int64_t)len > r->srv->cfg->max_content_bytes)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu bytes, limit %lld", len,
                      (long long)r->srv->cfg->max_content_bytes);
  return EG_OK;
}

eg_err eg_memory_to_api(eg_req *r, eg_txn *t, const eg_memory_rec *rec, int with_embedding,
                        Engram__V1__Memory **out) {
  Engram__V1__Memory *m = EG_ARENA_NEW(r->arena, Engram__V1__Memory);
  size_t len;
  if (!m) return EG_ENOMEM;
  engram__v1__memory__init(m);
  m->memory_id = rec->memory_id;
  m->user_id = rec->user_id;
  m->agent_id = rec->agent_id;
  m->type = rec->type;
  m->importance = rec->importance;
  m->confidence = rec->confidence;
  m->source_session_id = rec->source_session_id;
  m->state = rec->state;
  /* The record keeps a SUPERSEDED memory's successor in duplicate_of. */
  if (rec->state == EG_MSTATE_SUPERSEDED) m->superseded_by = rec->duplicate_of;
  else m->duplicate_of = rec->duplicate_of;
  m->version = rec->version;
  m->namespace_ = rec->namespace_;
  m->language = rec->language;
  if (!(m->create_time = eg_timestamp(r, rec->create_time_us)) ||
      !(m->update_time = eg_timestamp(r, rec->update_time_us)))
    return EG_ENOMEM;
  if (rec->expire_time_us && !(m->expire_time = eg_timestamp(r, rec->expire_time_us))) return EG_ENOMEM;
  eg_err e = eg_field_open(r, rec->user_id, "memory", rec->memory_id, "text", &rec->text_token,
                           &m->text, &len);
  if (e == EG_OK) e = eg_labels_open(r, rec, &m->category, &m->tags, &m->n_tags);
  if (e == EG_OK) e = eg_memory_metadata_open(r, rec, m);
  if (e != EG_OK) return e;
  if (with_embedding && rec->dim > 0) {
    m->embedding = EG_ARENA_ARRAY(r->arena, float, (size_t)rec->dim);
    if (!m->embedding) return EG_ENOMEM;
    if ((e = eg_store_memory_vector(t, r->tenant, rec, m->embedding))) return e;
    m->n_embedding = (size_t)rec->dim;
  }
  *out = m;
  return EG_OK;
}

/* ==== CreateMemory =============================================================== */

struct eg_cm_state {
  const Engram__V1__CreateMemoryRequest *in;
  const Engram__V1__Memory *m;
  eg_memory_rec rec;  /* the new record, minus state/version/times */
  const eg_blind_ctx *ctx;
  char **tags;
  size_t n_tags;
  float *vec;
  float jt, ct;
  eg_dedup_policy policy;
  int evict;
  int newer_wins; /* conflict_policy NEWER_WINS */
};

static eg_err eg_cm_check(eg_req *r, struct eg_cm_state *st) {
  const Engram__V1__Memory *m = st->m;
  const Engram__V1__CreateMemoryRequest *in = st->in;
  eg_err e;
  if ((e = eg_validate_id("memory.user_id", m->user_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("memory.memory_id", m->memory_id, 0, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("memory.agent_id", m->agent_id, 0, r->msg, sizeof r->msg)) ||
      (e = eg_validate_id("memory.source_session_id", m->source_session_id, 0, r->msg, sizeof r->msg)) ||
      (e = eg_check_type(r, "memory.type", m->type)) || (e = eg_text_check(r, "memory.text", m->text)) ||
      (e = eg_check_unit(r, "memory.importance", m->importance)) ||
      (e = eg_check_unit(r, "memory.confidence", m->confidence)) ||
      (e = eg_category_check(r, "memory.category", m->category)) ||
      (e = eg_tags_check(r, "memory.tags", m->tags, m->n_tags, (size_t)r->srv->cfg->memory_max_tags,
                         &st->tags, &st->n_tags)) ||
      (e = eg_namespace_check(r, "memory.namespace", m->namespace_)) ||
      (e = eg_language_check(r, "memory.language", m->language)) ||
      (e = eg_embedding_check(r, "memory.embedding", m->embedding, m->n_embedding, &st->vec,
                              &st->rec.norm)) ||
      (e = eg_check_unit(r, "jaccard_threshold", in->jaccard_threshold)) ||
      (e = eg_check_unit(r, "cosine_threshold", in->cosine_threshold)) ||
      (e = eg_time_us(r, "memory.expire_time", m->expire_time, &st->rec.expire_time_us)))
    return e;
  if (m->expire_time && st->rec.expire_time_us <= r->now_us)
    return eg_mem_invalid(r, "memory.expire_time", "must be in the future");
  if (in->dedup_policy < 0 || in->dedup_policy > ENGRAM__V1__DEDUP_POLICY__DEDUP_POLICY_MERGE)
    return eg_invalid(r->msg, sizeof r->msg, "dedup_policy", "unknown value %d", (int)in->dedup_policy);
  if (in->quota_policy < 0 || in->quota_policy > ENGRAM__V1__QUOTA_POLICY__QUOTA_POLICY_EVICT_LOWEST)
    return eg_invalid(r->msg, sizeof r->msg, "quota_policy", "unknown value %d", (int)in->quota_policy);
  if (in->conflict_policy < 0 || in->conflict_policy > ENGRAM__V1__CONFLICT_POLICY__CONFLICT_POLICY_NEWER_WINS)
    return eg_invalid(r->msg, sizeof r->msg, "conflict_policy", "unknown value %d", (int)in->conflict_policy);
  /* Conflicts are found by the dedup probe, which OFF skips: NEWER_WINS
   * would silently do nothing. */
  if (in->conflict_policy == ENGRAM__V1__CONFLICT_POLICY__CONFLICT_POLICY_NEWER_WINS &&
      in->dedup_policy == ENGRAM__V1__DEDUP_POLICY__DEDUP_POLICY_OFF)
    return eg_invalid(r->msg, sizeof r->msg, "conflict_policy",
                      "NEWER_WINS needs the dedup probe, which dedup_policy OFF skips");
  return EG_OK;
}

eg_err eg_create_memory_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__CreateMemoryRequest *in = (const void *)msg;
  struct eg_cm_state *st = EG_ARENA_NEW(r->arena, struct eg_cm_state);
  eg_blind_ctx *ctx;
  eg_err e;
  if (!st) return EG_ENOMEM;
  if (!in->memory) return eg_mem_invalid(r, "memory", "required");
  st->in = in;
  st->m = in->memory;
  engram__storage__v1__memory_record__init(&st->rec);
  if ((e = eg_cm_check(r, st)) || (e = eg_blind_ctx_of(r, &ctx))) return e;
  st->ctx = ctx;
  st->jt = in->jaccard_threshold > 0 ? in->jaccard_threshold : EG_DEDUP_JACCARD_DEFAULT;
  st->ct = in->cosine_threshold > 0 ? in->cosine_threshold : EG_DEDUP_COSINE_DEFAULT;
  st->policy = in->dedup_policy ? (eg_dedup_policy)in->dedup_policy : EG_POLICY_MARK;
  st->evict = in->quota_policy == ENGRAM__V1__QUOTA_POLICY__QUOTA_POLICY_EVICT_LOWEST ||
              (in->quota_policy == 0 && strcmp(r->srv->cfg->memory_quota_policy, "evict") == 0);
  st->newer_wins = in->conflict_policy == ENGRAM__V1__CONFLICT_POLICY__CONFLICT_POLICY_NEWER_WINS;
  eg_memory_rec *rec = &st->rec;
  rec->memory_id = st->m->memory_id;
  if (!rec->memory_id[0]) {
    if (!(rec->memory_id = eg_arena_alloc(r->arena, EG_ULID_LEN + 1))) return EG_ENOMEM;
    eg_ulid_new(rec->memory_id);
  }
  rec->user_id = st->m->user_id;
  rec->agent_id = st->m->agent_id;
  rec->type = st->m->type;
  rec->importance = st->m->importance;
  rec->confidence = st->m->confidence;
  rec->source_session_id = st->m->source_session_id;
  rec->duplicate_of = "";
  rec->dim = (int32_t)st->m->n_embedding;
  /* The language before the text: its words are read in it. */
  rec->language = st->m->language;
  eg_memory_ids_hash(ctx, rec);
  rec->blind_key_id = r->blind_key_used;
  if ((e = eg_text_seal(r, ctx, rec->memory_id, st->m->text, rec)) ||
      (e = eg_labels_seal(r, ctx, rec->memory_id, st->m->category, st->tags, st->n_tags, 0, rec)) ||
      (e = eg_memory_namespace_set(r, ctx, st->m->namespace_, rec)) ||
      (e = eg_memory_metadata_seal(r, "memory.metadata", rec->user_id, rec->memory_id,
                                   st->m->metadata, st->m->n_metadata, rec)))
    return e;
  r->state = st;
  return EG_OK;
}

/* What de-duplication compares: a memory (new, edited, or one the pass
 * examines) against the user's ACTIVE memories of its type. */
struct eg_probe {
  const eg_memory_rec *rec; /* user_id, type, flags, terms, dim, norm */
  const char *text;         /* rec's plain text, or NULL (opened if needed) */
  const float *vec;         /* rec->dim floats, or NULL */
  float jt, ct;
  const eg_memory_pos *self; /* NULL, or rec's own position: never a match */
  int older_only;            /* with self: only memories positioned before it */
};

/* The best duplicate and the conflicts among the user's ACTIVE memories of
 * the probe's type. */
struct eg_dedup {
  eg_req *r;
  const struct eg_probe *p;
  const eg_pmaps *shared; /* term overlaps by position, per version */
  int found;
  eg_similarity best;
  eg_memory_pos best_pos;
  char **conflicts;
  size_t n_conflicts, cap_conflicts;
  uint64_t visited; /* memories looked at (the pass's work budget) */
  int past_self;    /* older_only: the scan reached self; stop */
  eg_err err;
};

static void eg_dedup_consider(struct eg_dedup *d, const uint8_t *pos, size_t pos_len,
                              const eg_memory_meta *m, const uint8_t *vec) {
  const struct eg_probe *p = d->p;
  const eg_memory_rec *rec = p->rec;
  d->visited++;
  if (p->self) {
    eg_memory_pos here = {.len = pos_len};
    memcpy(here.buf, pos, pos_len);
    int c = eg_pos_cmp(&here, p->self);
    if (c == 0 || (p->older_only && c > 0)) {
      d->past_self = p->older_only;
      return;
    }
  }
  if (m->state != EG_MSTATE_ACTIVE || m->type != rec->type ||
      eg_memory_expired(m->expire_us, d->r->now_us))
    return;
  /* The probe's terms at the version of this memory's (versioned reads). */
  size_t n_terms;
  const eg_pmap_ent *ent =
      eg_pmaps_find(d->shared, eg_pmaps_key(d->shared, m), eg_pmaps_version(d->shared, m), pos,
                    pos_len, NULL, &n_terms);
  eg_similarity s = {.same_polarity = (m->flags & EG_MEMORY_F_NEGATED) == (rec->flags & EG_MEMORY_F_NEGATED)};
  s.jaccard = eg_jaccard(ent ? ent->count : 0, n_terms, m->n_terms);
  if (vec && p->vec) {
    s.both_vectors = 1;
    s.cosine = eg_cosine(eg_vec_dot(p->vec, vec, (size_t)rec->dim), rec->norm, m->norm);
  }
  int have_terms = n_terms > 0 && m->n_terms > 0;
  if (eg_is_conflict(&s, p->jt, p->ct, have_terms)) {
    if (d->n_conflicts == d->cap_conflicts) {
      size_t cap = d->cap_conflicts ? 2 * d->cap_conflicts : 8;
      char **c = EG_ARENA_ARRAY(d->r->arena, char *, cap);
      if (!c) return (void)(d->err = EG_ENOMEM);
      if (d->n_conflicts) memcpy(c, d->conflicts, d->n_conflicts * sizeof *c);
      d->conflicts = c;
      d->cap_conflicts = cap;
    }
    d->err = eg_pos_to_id(d->r, pos, pos_len, &d->conflicts[d->n_conflicts]);
    if (d->err == EG_OK) d->n_conflicts++;
    return;
  }
  if (!eg_is_duplicate(&s, p->jt, p->ct, have_terms)) return;
  if (d->found && !eg_dedup_better(&s, &d->best)) return;
  d->found = 1;
  d->best = s;
  memcpy(d->best_pos.buf, pos, pos_len);
  d->best_pos.len = pos_len;
}

static int eg_dedup_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m,
                          const uint8_t *vec) {
  struct eg_dedup *d = arg;
  eg_dedup_consider(d, pos->buf, pos->len, m, vec);
  return d->err != EG_OK || d->past_self;
}

static eg_err eg_dedup_run(eg_req *r, eg_txn *t, const struct eg_probe *p, struct eg_dedup *d) {
  eg_terms_versions tv;
  eg_pmaps *shared = EG_ARENA_NEW(r->arena, eg_pmaps);
  eg_blind_read *keys = EG_ARENA_NEW(r->arena, eg_blind_read);
  const eg_memory_rec *rec = p->rec;
  if (!shared || !keys) return EG_ENOMEM;
  *d = (struct eg_dedup){.r = r, .p = p, .shared = shared};
  eg_err e = eg_blind_read_ctxs(r, t, keys);
  if (!e) e = eg_memory_versions(r, t, keys, rec, p->text, &tv);
  if (!e) e = eg_pmaps_join(r, t, rec->user_id, &tv, 1, shared);
  if (e) return e;
  /* The join's work counts too: each entry's count is the postings read
   * for it (a common term costs one read per memory that has it). */
  d->visited += shared->reads;
  if (p->vec) {
    /* Cosine needs every ACTIVE memory with a vector: one scan of the meta
     * and vectors, the term overlaps looked up as it goes. */
    e = eg_store_memories_scan(t, r->tenant, rec->user_id, NULL, 0, 1, eg_dedup_visit, d);
    return e ? e : d->err;
  }
  /* Jaccard alone: only memories sharing a term can match. Many of them
   * (common words): scan the meta values in order instead of looking each up. */
  eg_memory_counters cnt;
  if ((e = eg_store_memory_counters(t, r->tenant, rec->user_id, &cnt))) return e;
  if (shared->n * EG_SCAN_SHARE > cnt.count[1] + cnt.count[2] + cnt.count[3]) {
    e = eg_store_memories_scan(t, r->tenant, rec->user_id, NULL, 0, 0, eg_dedup_visit, d);
    return e ? e : d->err;
  }
  /* Few: visit them in position order (oldest first), as the scan does, so
   * that among equal matches the same one wins either way. */
  eg_memory_pos *cands = EG_ARENA_ARRAY(r->arena, eg_memory_pos, shared->n ? shared->n : 1);
  size_t n = 0;
  if (!cands) return EG_ENOMEM;
  for (unsigned k = 0; k < keys->n; k++)
    for (unsigned v = tv.from; v <= EG_TOKENIZER_VERSION; v++)
      for (size_t i = 0; i < shared->m[k][v].n; i++) {
        memcpy(cands[n].buf, shared->m[k][v].ents[i].pos, shared->m[k][v].ents[i].len);
        cands[n++].len = shared->m[k][v].ents[i].len;
      }
  qsort(cands, n, sizeof *cands, eg_pos_cmp);
  for (size_t i = 0; i < n && !d->err && !d->past_self; i++) {
    /* In the maps of two versions: considered once. */
    if (i && eg_pos_cmp(&cands[i], &cands[i - 1]) == 0) continue;
    eg_memory_meta m;
    e = eg_store_memory_meta_at(t, r->tenant, rec->user_id, &cands[i], 0, &m, NULL);
    if (e == EG_ENOTFOUND) continue; /* a posting whose memory is gone: skip */
    if (e) return e;
    eg_dedup_consider(d, cands[i].buf, cands[i].len, &m, NULL);
  }
  return d->err;
}

/* The record of the best match of a finished eg_dedup_run into *out. */
static eg_err eg_dedup_match(eg_req *r, eg_txn *t, const struct eg_dedup *d, eg_memory_rec **out) {
  char *id;
  eg_err e = eg_pos_to_id(r, d->best_pos.buf, d->best_pos.len, &id);
  return e ? e : eg_memory_load(r, t, id, 0, out);
}

/* eg_store_memory_put, with rec's agent_hash and source_hash filled in
 * where they are missing: a record written before they existed has ids
 * but no tokens, and its next put writes the meta layout whose filters
 * read only the tokens (a real token is 0 with odds of 2^-64). */
static eg_err eg_memory_put(eg_req *r, eg_txn *t, eg_memory_rec *rec, const eg_memory_rec *prev,
                            const float *vec) {
  if ((rec->agent_id[0] && !rec->agent_hash) || (rec->source_session_id[0] && !rec->source_hash)) {
    /* Such a record is from before rotations (blind_key_id 0): its tokens
     * under its own key, the row's legacy one. */
    eg_blind_keys k;
    eg_blind_ctx *ctx;
    eg_err e = eg_blind_keys_get(t, eg_srv_keys(r->srv), &k);
    if (!e) e = eg_blind_ctx_under(r, eg_blind_keys_rec(&k, rec->blind_key_id), &ctx);
    if (e) return e;
    eg_memory_ids_hash(ctx, rec);
  }
  return eg_store_memory_put(t, r->tenant, rec, prev, vec);
}

/* Marks old (stored, ACTIVE) as `state` pointing at winner_id (duplicate_of
 * holds both a DUPLICATE's original and a SUPERSEDED memory's successor). */
static eg_err eg_mark(eg_req *r, eg_txn *t, const eg_memory_rec *old, int state, char *winner_id) {
  eg_memory_rec upd = *old;
  upd.state = state;
  upd.duplicate_of = winner_id;
  upd.version++;
  upd.update_time_us = r->now_us;
  return eg_memory_put(r, t, &upd, old, NULL);
}

/* The position of rec in its user's range (see storage/memories.h). */
/* The lowest-importance unexpired ACTIVE memory (oldest on ties), for
 * eviction; and expired memories, to purge before counting. */
struct eg_quota_scan {
  eg_req *r;
  int found;
  float importance;
  eg_memory_pos victim;
  eg_memory_pos *expired;
  size_t n_expired, cap_expired;
  eg_err err;
};

static int eg_quota_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m,
                          const uint8_t *vec) {
  struct eg_quota_scan *q = arg;
  if (eg_memory_expired(m->expire_us, q->r->now_us)) {
    if (q->n_expired == q->cap_expired) {
      size_t cap = q->cap_expired ? 2 * q->cap_expired : 16;
      eg_memory_pos *p = EG_ARENA_ARRAY(q->r->arena, eg_memory_pos, cap);
      if (!p) return q->err = EG_ENOMEM, 1;
      if (q->n_expired) memcpy(p, q->expired, q->n_expired * sizeof *p);
      q->expired = p;
      q->cap_expired = cap;
    }
    q->expired[q->n_expired++] = *pos;
    return 0;
  }
  if (m->state == EG_MSTATE_ACTIVE && (!q->found || m->importance < q->importance)) {
    q->found = 1;
    q->importance = m->importance;
    q->victim = *pos;
  }
  return 0;
}

static eg_err eg_purge_at(eg_req *r, eg_txn *t, const eg_memory_pos *pos, char **id) {
  eg_memory_rec *rec;
  eg_err e = eg_pos_to_id(r, pos->buf, pos->len, id);
  if (!e) e = eg_memory_load(r, t, *id, 1, &rec);
  if (!e) e = eg_store_memory_purge(t, r->tenant, rec);
  r->msg[0] = '\0';
  return e;
}

/* Makes room for one more ACTIVE memory: purges the user's expired
 * memories, then, if still at the quota, evicts or refuses. */
static eg_err eg_quota_make_room(eg_req *r, eg_txn *t, const struct eg_cm_state *st, char **evicted) {
  const char *user = st->rec.user_id;
  int64_t quota = r->srv->cfg->memory_quota;
  eg_memory_counters c;
  eg_err e = eg_store_memory_counters(t, r->tenant, user, &c);
  if (e || (int64_t)c.count[EG_MSTATE_ACTIVE] < quota) return e;
  struct eg_quota_scan q = {.r = r};
  if ((e = eg_store_memories_scan(t, r->tenant, user, NULL, 0, 0, eg_quota_visit, &q)) || (e = q.err))
    return e;
  for (size_t i = 0; i < q.n_expired; i++) {
    char *id;
    if ((e = eg_purge_at(r, t, &q.expired[i], &id))) return e;
  }
  if ((e = eg_store_memory_counters(t, r->tenant, user, &c))) return e;
  if ((int64_t)c.count[EG_MSTATE_ACTIVE] < quota) return EG_OK;
  if (!st->evict || !q.found) {
    snprintf(r->msg, sizeof r->msg,
             "memory quota: user '%s' has %" PRIu64 " ACTIVE memories, the limit (--memory-quota) "
             "is %lld",
             user, c.count[EG_MSTATE_ACTIVE], (long long)quota);
    return EG_EQUOTA;
  }
  return eg_purge_at(r, t, &q.victim, evicted);
}

/* Re-tokenizes every blind field of rec under the write key if rec (as
 * stored, read through t) is under another: a write that changes some of
 * them under the write key then leaves no token under the old one. */
static eg_err eg_memory_blind_align(eg_req *r, eg_txn *t, eg_memory_rec *rec) {
  eg_blind_keys k;
  eg_blind_ctx *ctx;
  eg_err e = eg_blind_keys_get(t, eg_srv_keys(r->srv), &k);
  if (e || eg_blind_keys_rec(&k, rec->blind_key_id) == eg_blind_keys_write(&k)) return e;
  if ((e = eg_blind_ctx_of(r, &ctx))) return e;
  return eg_memory_blind_rehash(r, ctx, rec);
}

/* MERGE: the match takes the higher scores and the union of the tags. */
static eg_err eg_cm_merge(eg_req *r, eg_txn *t, const struct eg_cm_state *st, eg_memory_rec *old,
                          eg_memory_rec **out) {
  eg_memory_rec *upd = EG_ARENA_NEW(r->arena, eg_memory_rec);
  char *category, **tags;
  size_t n, max = (size_t)r->srv->cfg->memory_max_tags;
  if (!upd) return EG_ENOMEM;
  *upd = *old;
  /* Its new tag tokens are under the write key: the rest of it too. */
  eg_err e = eg_memory_blind_align(r, t, upd);
  if (!e) e = eg_labels_open(r, old, &category, &tags, &n);
  if (e) return e;
  char **all = EG_ARENA_ARRAY(r->arena, char *, n + st->n_tags + 1);
  if (!all) return EG_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) all[k++] = tags[i];
  for (size_t i = 0; i < st->n_tags && k < max; i++) {
    int dup = 0;
    for (size_t j = 0; j < k && !dup; j++) dup = strcmp(all[j], st->tags[i]) == 0;
    if (!dup) all[k++] = st->tags[i];
  }
  if (!category[0]) category = st->m->category;
  /* On the writer, under the user's data key that prepare sealed the new
   * memory with (de-duplication stays within one user): never made here. */
  if ((e = eg_labels_seal(r, st->ctx, old->memory_id, category, all, k, 1, upd))) return e;
  if (st->rec.importance > upd->importance) upd->importance = st->rec.importance;
  if (st->rec.confidence > upd->confidence) upd->confidence = st->rec.confidence;
  upd->version++;
  upd->update_time_us = r->now_us;
  if ((e = eg_memory_put(r, t, upd, old, NULL))) return e;
  *out = upd;
  return EG_OK;
}

/* conflict_policy NEWER_WINS: each of d's conflicts (ACTIVE when found)
 * becomes SUPERSEDED by winner_id, listed in out->superseded_ids. */
static eg_err eg_supersede(eg_req *r, eg_txn *t, const struct eg_cm_state *st, const struct eg_dedup *d,
                           char *winner_id, Engram__V1__CreateMemoryResponse *out) {
  if (!st->newer_wins || !d->n_conflicts) return EG_OK;
  out->superseded_ids = d->conflicts;
  out->n_superseded_ids = d->n_conflicts;
  for (size_t i = 0; i < d->n_conflicts; i++) {
    eg_memory_rec *c;
    eg_err e = eg_memory_load(r, t, d->conflicts[i], 0, &c);
    if (!e) e = eg_mark(r, t, c, EG_MSTATE_SUPERSEDED, winner_id);
    if (e) return e;
  }
  return EG_OK;
}

eg_err eg_create_memory_apply(eg_req *r, eg_txn *t) {
  const struct eg_cm_state *st = r->state;
  eg_memory_rec rec = st->rec, *old = NULL, *stored = &rec;
  struct eg_dedup d = {0};
  char *evicted = NULL;
  eg_err e;
  Engram__V1__CreateMemoryResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__CreateMemoryResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__create_memory_response__init(out);
  if (rec.source_session_id[0]) {
    eg_session_rec *s;
    e = eg_store_session_get(t, r->tenant, rec.source_session_id, &s);
    if (e == EG_ENOTFOUND)
      return eg_invalid(r->msg, sizeof r->msg, "memory.source_session_id", "no session '%s'",
                        rec.source_session_id);
    if (e) return e;
    engram__storage__v1__session_record__free_unpacked(s, NULL);
  }
  if ((e = eg_dim_check(r, t, rec.user_id, "memory.embedding", (size_t)rec.dim))) return e;
  e = eg_store_memory_get(t, r->tenant, rec.memory_id, &old);
  if (e == EG_OK) {
    engram__storage__v1__memory_record__free_unpacked(old, NULL);
    snprintf(r->msg, sizeof r->msg, "memory.memory_id: '%s' already exists", rec.memory_id);
    return EG_EEXIST;
  }
  if (e != EG_ENOTFOUND) return e;
  old = NULL;
  if ((e = eg_field_sealed_live(r, rec.user_id, "memory", rec.memory_id, &rec.text_token)) ||
      (e = eg_field_sealed_live(r, rec.user_id, "memory", rec.memory_id, &rec.labels_token)) ||
      (e = eg_field_sealed_live(r, rec.user_id, "memory", rec.memory_id, &rec.metadata_token)))
    return e;
  eg_dedup_action act = EG_DEDUP_NONE;
  if (st->policy != EG_POLICY_OFF) {
    struct eg_probe p = {.rec = &st->rec, .text = st->m->text, .vec = st->vec, .jt = st->jt,
                         .ct = st->ct};
    if ((e = eg_dedup_run(r, t, &p, &d))) return e;
    if (d.found) {
      if ((e = eg_dedup_match(r, t, &d, &old))) return e;
      act = eg_dedup_decide(st->policy, rec.importance, old->importance);
      out->matched_memory_id = old->memory_id;
      out->jaccard = d.best.jaccard;
      out->cosine = d.best.cosine;
    }
  }
  out->conflicts_with = d.conflicts;
  out->n_conflicts_with = d.n_conflicts;
  rec.state = EG_MSTATE_ACTIVE;
  rec.version = 1;
  rec.create_time_us = rec.update_time_us = r->now_us;
  switch (act) {
    case EG_DEDUP_MERGE:
      out->outcome = ENGRAM__V1__DEDUP_OUTCOME__DEDUP_OUTCOME_MERGED;
      if ((e = eg_cm_merge(r, t, st, old, &stored))) return e;
      break;
    case EG_DEDUP_NEW_IS_DUP:
      out->outcome = ENGRAM__V1__DEDUP_OUTCOME__DEDUP_OUTCOME_DUPLICATE;
      rec.state = EG_MSTATE_DUPLICATE;
      rec.duplicate_of = old->memory_id;
      break;
    case EG_DEDUP_OLD_IS_DUP:
      out->outcome = ENGRAM__V1__DEDUP_OUTCOME__DEDUP_OUTCOME_SUPERSEDED;
      if ((e = eg_mark(r, t, old, EG_MSTATE_DUPLICATE, rec.memory_id))) return e;
      break;
    case EG_DEDUP_NONE:
      out->outcome = ENGRAM__V1__DEDUP_OUTCOME__DEDUP_OUTCOME_CREATED;
      /* Superseded memories leave the ACTIVE count first: a contradiction
       * at the quota replaces instead of evicting or being refused. */
      if ((e = eg_supersede(r, t, st, &d, rec.memory_id, out)) ||
          (e = eg_quota_make_room(r, t, st, &evicted)))
        return e;
      out->evicted_memory_id = evicted;
      break;
  }
  /* NEWER_WINS: the memory now holding the fact replaces the conflicts. */
  if (act != EG_DEDUP_NONE &&
      (e = eg_supersede(r, t, st, &d, act == EG_DEDUP_OLD_IS_DUP ? rec.memory_id : old->memory_id, out)))
    return e;
  if (act != EG_DEDUP_MERGE && (e = eg_memory_put(r, t, &rec, NULL, st->vec))) {
    if (e == EG_EEXIST)
      snprintf(r->msg, sizeof r->msg, "memory.memory_id: '%s' already exists", rec.memory_id);
    return e;
  }
  if (stored == &rec) {
    /* The reply echoes the request's plaintext: nothing to decrypt. */
    Engram__V1__Memory *m = EG_ARENA_NEW(r->arena, Engram__V1__Memory);
    if (!m) return EG_ENOMEM;
    *m = *st->m;
    m->memory_id = rec.memory_id;
    m->tags = st->tags;
    m->n_tags = st->n_tags;
    m->state = rec.state;
    m->duplicate_of = rec.duplicate_of;
    m->version = rec.version;
    if (!(m->create_time = eg_timestamp(r, rec.create_time_us)) ||
        !(m->update_time = eg_timestamp(r, rec.update_time_us)) ||
        (rec.expire_time_us && !(m->expire_time = eg_timestamp(r, rec.expire_time_us))))
      return EG_ENOMEM;
    if (!rec.expire_time_us) m->expire_time = NULL;
    out->memory = m;
  } else if ((e = eg_memory_to_api(r, t, stored, 1, &out->memory))) {
    return e;
  }
  r->resp = &out->base;
  return EG_OK;
}

/* ==== GetMemory ===================================================================== */

static eg_err eg_get_memory(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__GetMemoryRequest *in = (const void *)msg;
  eg_memory_rec *rec;
  eg_err e = eg_validate_id("memory_id", in->memory_id, 1, r->msg, sizeof r->msg);
  if (!e) e = eg_memory_load(r, r->rtxn, in->memory_id, 0, &rec);
  if (!e) e = eg_memory_to_api(r, r->rtxn, rec, 1, (Engram__V1__Memory **)&r->resp);
  return e;
}

/* ==== UpdateMemory =================================================================== */

enum {
  EG_UP_TEXT = 1 << 0,
  EG_UP_CATEGORY = 1 << 1,
  EG_UP_IMPORTANCE = 1 << 2,
  EG_UP_CONFIDENCE = 1 << 3,
  EG_UP_TAGS = 1 << 4,
  EG_UP_EMBEDDING = 1 << 5,
  EG_UP_EXPIRE = 1 << 6,
  EG_UP_AGENT = 1 << 7,
  EG_UP_TYPE = 1 << 8,
  EG_UP_METADATA = 1 << 9,
  EG_UP_NAMESPACE = 1 << 10,
  EG_UP_LANGUAGE = 1 << 11,
};

static const struct {
  const char *path;
  unsigned bit;
} eg_up_paths[] = {{"text", EG_UP_TEXT},         {"category", EG_UP_CATEGORY},
                   {"importance", EG_UP_IMPORTANCE}, {"confidence", EG_UP_CONFIDENCE},
                   {"tags", EG_UP_TAGS},         {"embedding", EG_UP_EMBEDDING},
                   {"expire_time", EG_UP_EXPIRE}, {"agent_id", EG_UP_AGENT},
                   {"type", EG_UP_TYPE},         {"metadata", EG_UP_METADATA},
                   {"namespace", EG_UP_NAMESPACE}, {"language", EG_UP_LANGUAGE}};

struct eg_um_state {
  const Engram__V1__UpdateMemoryRequest *in;
  const Engram__V1__Memory *m;
  unsigned mask;
  const eg_blind_ctx *ctx;
  /* What prepare sealed and hashed of the mask's fields: text_token
   * (EG_UP_TEXT: its terms are made in apply, in the language the record
   * may hold), metadata_token and metadata_hashes, namespace_ and
   * namespace_hashes. */
  eg_memory_rec sealed;
  char **tags;
  size_t n_tags;
  float *vec;
  float norm;
  int64_t expire_us;
  int dedup;    /* the edit may duplicate another memory: compare */
  float jt, ct; /* dedup thresholds */
  /* The memory's user in prepare's snapshot, whose data key sealed what
   * prepare sealed; NULL: nothing sealed. */
  const char *user;
};

static eg_err eg_um_mask(eg_req *r, struct eg_um_state *st) {
  const Google__Protobuf__FieldMask *fm = st->in->update_mask;
  if (!fm || fm->n_paths == 0) return eg_mem_invalid(r, "update_mask", "required: name the fields to change");
  for (size_t i = 0; i < fm->n_paths; i++) {
    const char *p = fm->paths[i];
    /* "memory.text" reads the same as "text". */
    if (strncmp(p, "memory.", 7) == 0) p += 7;
    unsigned bit = 0;
    for (size_t j = 0; j < sizeof eg_up_paths / sizeof eg_up_paths[0] && !bit; j++)
      if (strcmp(p, eg_up_paths[j].path) == 0) bit = eg_up_paths[j].bit;
    if (!bit)
      return eg_invalid(r->msg, sizeof r->msg, "update_mask", "'%s' is not an updatable field "
                        "(text, category, importance, confidence, tags, embedding, expire_time, "
                        "agent_id, type, metadata, namespace, language)", fm->paths[i]);
    st->mask |= bit;
  }
  return EG_OK;
}

static eg_err eg_um_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__UpdateMemoryRequest *in = (const void *)msg;
  struct eg_um_state *st = EG_ARENA_NEW(r->arena, struct eg_um_state);
  eg_blind_ctx *ctx;
  eg_err e;
  if (!st) return EG_ENOMEM;
  if (!in->memory) return eg_mem_invalid(r, "memory", "required");
  st->in = in;
  const Engram__V1__Memory *m = st->m = in->memory;
  if ((e = eg_validate_id("memory.memory_id", m->memory_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_um_mask(r, st)) || (e = eg_blind_ctx_of(r, &ctx)))
    return e;
  st->ctx = ctx;
  unsigned k = st->mask;
  if (in->expected_version < 0) return eg_mem_invalid(r, "expected_version", "must not be negative");
  if (((k & EG_UP_TEXT) && (e = eg_text_check(r, "memory.text", m->text))) ||
      ((k & EG_UP_CATEGORY) && (e = eg_category_check(r, "memory.category", m->category))) ||
      ((k & EG_UP_IMPORTANCE) && (e = eg_check_unit(r, "memory.importance", m->importance))) ||
      ((k & EG_UP_CONFIDENCE) && (e = eg_check_unit(r, "memory.confidence", m->confidence))) ||
      ((k & EG_UP_TAGS) &&
       (e = eg_tags_check(r, "memory.tags", m->tags, m->n_tags, (size_t)r->srv->cfg->memory_max_tags,
                          &st->tags, &st->n_tags))) ||
      ((k & EG_UP_EMBEDDING) &&
       (e = eg_embedding_check(r, "memory.embedding", m->embedding, m->n_embedding, &st->vec, &st->norm))) ||
      ((k & EG_UP_EXPIRE) && (e = eg_time_us(r, "memory.expire_time", m->expire_time, &st->expire_us))) ||
      ((k & EG_UP_AGENT) && (e = eg_validate_id("memory.agent_id", m->agent_id, 0, r->msg, sizeof r->msg))) ||
      ((k & EG_UP_TYPE) && (e = eg_check_type(r, "memory.type", m->type))) ||
      ((k & EG_UP_NAMESPACE) && (e = eg_namespace_check(r, "memory.namespace", m->namespace_))) ||
      ((k & EG_UP_LANGUAGE) && (e = eg_language_check(r, "memory.language", m->language))))
    return e;
  if ((k & EG_UP_EXPIRE) && st->expire_us && st->expire_us <= r->now_us)
    return eg_mem_invalid(r, "memory.expire_time", "must be in the future (or unset: never)");
  if (in->dedup_policy < 0 || in->dedup_policy > ENGRAM__V1__DEDUP_POLICY__DEDUP_POLICY_MERGE)
    return eg_invalid(r->msg, sizeof r->msg, "dedup_policy", "unknown value %d", (int)in->dedup_policy);
  if (in->dedup_policy == ENGRAM__V1__DEDUP_POLICY__DEDUP_POLICY_MERGE)
    return eg_mem_invalid(r, "dedup_policy", "MERGE would drop the edit: use MARK or OFF");
  if ((e = eg_check_unit(r, "jaccard_threshold", in->jaccard_threshold)) ||
      (e = eg_check_unit(r, "cosine_threshold", in->cosine_threshold)))
    return e;
  st->jt = in->jaccard_threshold > 0 ? in->jaccard_threshold : EG_DEDUP_JACCARD_DEFAULT;
  st->ct = in->cosine_threshold > 0 ? in->cosine_threshold : EG_DEDUP_COSINE_DEFAULT;
  /* Only what the comparison reads can make a new duplicate. */
  st->dedup = in->dedup_policy != ENGRAM__V1__DEDUP_POLICY__DEDUP_POLICY_OFF &&
              (k & (EG_UP_TEXT | EG_UP_EMBEDDING | EG_UP_TYPE | EG_UP_LANGUAGE));
  eg_memory_rec *sl = &st->sealed;
  engram__storage__v1__memory_record__init(sl);
  /* What is sealed, here or in apply (labels), is sealed under the
   * memory's user's data key: the user from this snapshot (apply checks
   * it is still the memory's, and that the key is still live), its key
   * made here: the writer never makes one. */
  if (k & (EG_UP_TEXT | EG_UP_METADATA | EG_UP_CATEGORY | EG_UP_TAGS)) {
    eg_memory_rec *cur;
    if ((e = eg_memory_load(r, r->rtxn, m->memory_id, 0, &cur)) ||
        (e = eg_field_key_ready(r, cur->user_id)))
      return e;
    st->user = cur->user_id;
  }
  if (((k & EG_UP_TEXT) && (e = eg_field_seal(r, st->user, "memory", m->memory_id, "text", m->text,
                                              strlen(m->text), &sl->text_token))) ||
      ((k & EG_UP_METADATA) &&
       (e = eg_memory_metadata_seal(r, "memory.metadata", st->user, m->memory_id, m->metadata,
                                    m->n_metadata, sl))) ||
      ((k & EG_UP_NAMESPACE) && (e = eg_memory_namespace_set(r, ctx, m->namespace_, sl))))
    return e;
  r->state = st;
  return EG_OK;
}

static eg_err eg_version_check(eg_req *r, int64_t expected, const eg_memory_rec *rec) {
  if (expected && expected != rec->version) {
    snprintf(r->msg, sizeof r->msg, "expected_version: %" PRId64 ", but memory '%s' is at version %" PRId64,
             expected, rec->memory_id, rec->version);
    return EG_EABORTED;
  }
  return EG_OK;
}

/* The edited memory upd (ACTIVE, not yet stored) against the user's other
 * ACTIVE memories, as CreateMemory's MARK would: the more important stays
 * ACTIVE, on a tie the other one. */
static eg_err eg_um_dedup(eg_req *r, eg_txn *t, const struct eg_um_state *st, eg_memory_rec *upd) {
  struct eg_probe p = {.rec = upd, .text = (st->mask & EG_UP_TEXT) ? st->m->text : NULL,
                       .jt = st->jt, .ct = st->ct};
  struct eg_dedup d;
  eg_memory_pos self;
  eg_memory_rec *match;
  eg_err e;
  eg_memory_pos_of(upd, &self);
  p.self = &self;
  if (st->mask & EG_UP_EMBEDDING) {
    p.vec = st->vec;
  } else if (upd->dim > 0) {
    float *v = EG_ARENA_ARRAY(r->arena, float, (size_t)upd->dim);
    if (!v) return EG_ENOMEM;
    if ((e = eg_store_memory_vector(t, r->tenant, upd, v))) return e;
    p.vec = v;
  }
  if ((e = eg_dedup_run(r, t, &p, &d)) || !d.found || (e = eg_dedup_match(r, t, &d, &match))) return e;
  if (eg_dedup_decide(EG_POLICY_MARK, upd->importance, match->importance) == EG_DEDUP_OLD_IS_DUP)
    return eg_mark(r, t, match, EG_MSTATE_DUPLICATE, upd->memory_id);
  upd->state = EG_MSTATE_DUPLICATE;
  upd->duplicate_of = match->memory_id;
  return EG_OK;
}

static eg_err eg_um_apply(eg_req *r, eg_txn *t) {
  const struct eg_um_state *st = r->state;
  const Engram__V1__Memory *m = st->m;
  unsigned k = st->mask;
  eg_memory_rec *old, upd;
  eg_err e = eg_memory_load(r, t, m->memory_id, 0, &old);
  if (e || (e = eg_version_check(r, st->in->expected_version, old))) return e;
  if (st->user && strcmp(st->user, old->user_id) != 0) {
    snprintf(r->msg, sizeof r->msg,
             "memory_id: memory '%s' was replaced while the call was prepared; retry",
             old->memory_id);
    return EG_EABORTED;
  }
  if (old->state == EG_MSTATE_DELETED) {
    snprintf(r->msg, sizeof r->msg, "memory_id: memory '%s' is deleted", old->memory_id);
    return EG_EPRECOND;
  }
  if ((e = eg_field_sealed_live(r, st->user, "memory", old->memory_id, &st->sealed.text_token)) ||
      (e = eg_field_sealed_live(r, st->user, "memory", old->memory_id,
                                &st->sealed.metadata_token)))
    return e;
  upd = *old;
  /* The fields it changes get tokens under the write key: the others too,
   * if old is under another (a blind-index rotation runs), so that every
   * token of the record is under the key it says. */
  if ((e = eg_memory_blind_align(r, t, &upd))) return e;
  if (k & (EG_UP_TEXT | EG_UP_LANGUAGE)) {
    /* New words or a new language: the text is indexed again. */
    char *text = m->text;
    size_t len = strlen(text);
    if (k & EG_UP_TEXT) upd.text_token = st->sealed.text_token;
    else if ((e = eg_field_open(r, old->user_id, "memory", old->memory_id, "text",
                                &old->text_token, &text, &len)))
      return e;
    if (k & EG_UP_LANGUAGE) upd.language = m->language;
    if ((e = eg_text_index(r, st->ctx, text, len, &upd))) return e;
  }
  if (k & EG_UP_METADATA) {
    upd.metadata_token = st->sealed.metadata_token;
    upd.metadata_hashes = st->sealed.metadata_hashes;
    upd.n_metadata_hashes = st->sealed.n_metadata_hashes;
  }
  if (k & EG_UP_NAMESPACE) {
    upd.namespace_ = st->sealed.namespace_;
    upd.namespace_hashes = st->sealed.namespace_hashes;
    upd.n_namespace_hashes = st->sealed.n_namespace_hashes;
  }
  if (k & (EG_UP_CATEGORY | EG_UP_TAGS)) {
    char *category, **tags;
    size_t n;
    if ((e = eg_labels_open(r, old, &category, &tags, &n))) return e;
    if (k & EG_UP_CATEGORY) category = m->category;
    if (k & EG_UP_TAGS) tags = st->tags, n = st->n_tags;
    if ((e = eg_labels_seal(r, st->ctx, old->memory_id, category, tags, n, 1, &upd))) return e;
  }
  if (k & EG_UP_IMPORTANCE) upd.importance = m->importance;
  if (k & EG_UP_CONFIDENCE) upd.confidence = m->confidence;
  if (k & EG_UP_EXPIRE) upd.expire_time_us = st->expire_us;
  if (k & EG_UP_AGENT) upd.agent_id = m->agent_id, upd.agent_hash = eg_agent_hash(st->ctx, m->agent_id);
  if (k & EG_UP_TYPE) upd.type = m->type;
  if (k & EG_UP_EMBEDDING) {
    if ((e = eg_dim_check(r, t, old->user_id, "memory.embedding", m->n_embedding))) return e;
    upd.dim = (int32_t)m->n_embedding;
    upd.norm = st->norm;
  }
  upd.version++;
  upd.update_time_us = r->now_us;
  if (st->dedup && upd.state == EG_MSTATE_ACTIVE && (e = eg_um_dedup(r, t, st, &upd))) return e;
  if ((e = eg_memory_put(r, t, &upd, old, (k & EG_UP_EMBEDDING) ? st->vec : NULL))) return e;
  e = eg_memory_to_api(r, t, &upd, 1, (Engram__V1__Memory **)&r->resp);
  /* The reply opens the record: ERASED here, with its text's key live at
   * the check above, means an erasure committed since (on a worker, not
   * ordered with this apply). This apply is rolled back, nothing stored:
   * ABORTED (retry), as the check answers. */
  if (e == EG_EERASED) {
    eg_err live = eg_field_sealed_live(r, upd.user_id, "memory", upd.memory_id, &upd.text_token);
    if (live != EG_OK) return live;
  }
  return e;
}

/* ==== DeleteMemory ===================================================================== */

static eg_err eg_dm_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__DeleteMemoryRequest *in = (const void *)msg;
  r->state = (void *)in;
  if (in->expected_version < 0) return eg_mem_invalid(r, "expected_version", "must not be negative");
  return eg_validate_id("memory_id", in->memory_id, 1, r->msg, sizeof r->msg);
}

eg_err eg_memory_delete(eg_req *r, eg_txn *t, const char *memory_id, int purge,
                        int64_t expected_version, eg_memory_rec **after, int *purged) {
  eg_memory_rec *old;
  *purged = 0;
  if (after) *after = NULL;
  /* A purge may remove an expired memory; nothing of it is returned. */
  eg_err e = eg_memory_load(r, t, memory_id, purge, &old);
  if (e || (e = eg_version_check(r, expected_version, old))) return e;
  if (purge) {
    *purged = 1;
    return eg_store_memory_purge(t, r->tenant, old);
  }
  eg_memory_rec *upd = EG_ARENA_NEW(r->arena, eg_memory_rec);
  if (!upd) return EG_ENOMEM;
  *upd = *old;
  if (old->state != EG_MSTATE_DELETED) {
    upd->state = EG_MSTATE_DELETED;
    upd->version++;
    upd->update_time_us = r->now_us;
    if ((e = eg_memory_put(r, t, upd, old, NULL))) return e;
  }
  if (after) *after = upd;
  return EG_OK;
}

static eg_err eg_dm_apply(eg_req *r, eg_txn *t) {
  const Engram__V1__DeleteMemoryRequest *in = r->state;
  eg_memory_rec *after;
  int purged;
  eg_err e = eg_memory_delete(r, t, in->memory_id, in->purge, in->expected_version, &after, &purged);
  if (e) return e;
  Engram__V1__DeleteMemoryResponse *out = EG_ARENA_NEW(r->arena, Engram__V1__DeleteMemoryResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__delete_memory_response__init(out);
  r->resp = &out->base;
  out->purged = purged;
  return purged ? EG_OK : eg_memory_to_api(r, t, after, 0, &out->memory);
}

/* ==== DeduplicateMemories ============================================================ */

/* How far the pass got: the last memory examined and the counts. */
struct eg_dd_progress {
  eg_memory_pos cursor;
  int started; /* cursor is set */
  int64_t examined, duplicates, superseded, batches;
};

/* One call is many applies (r->more); each resumes from the progress its
 * predecessor committed. An apply may also be replayed (its batch rolled
 * back after the map grew), so it never overwrites the committed progress:
 * it leaves its own as `pending`, tagged with the last LSN before its txn.
 * The next apply adopts it only if an LSN was committed since, i.e. that
 * txn committed (the writer is the only one committing, one txn at a time,
 * and a txn with an applied item always commits or fails the call). */
struct eg_dd_state {
  const char *user_id;
  float jt, ct;
  float *vec; /* EG_MEMORY_DIM_MAX floats: the examined memory's embedding */
  struct eg_dd_progress done, pending;
  uint64_t pending_lsn;
  int has_pending;
};

static eg_err eg_dd_prepare(eg_req *r, const ProtobufCMessage *msg) {
  const Engram__V1__DeduplicateMemoriesRequest *in = (const void *)msg;
  struct eg_dd_state *st = EG_ARENA_NEW(r->arena, struct eg_dd_state);
  eg_err e;
  if (!st) return EG_ENOMEM;
  if ((e = eg_validate_id("user_id", in->user_id, 1, r->msg, sizeof r->msg)) ||
      (e = eg_check_unit(r, "jaccard_threshold", in->jaccard_threshold)) ||
      (e = eg_check_unit(r, "cosine_threshold", in->cosine_threshold)))
    return e;
  if (!(st->vec = EG_ARENA_ARRAY(r->arena, float, EG_MEMORY_DIM_MAX))) return EG_ENOMEM;
  st->user_id = in->user_id;
  st->jt = in->jaccard_threshold > 0 ? in->jaccard_threshold : EG_DEDUP_JACCARD_DEFAULT;
  st->ct = in->cosine_threshold > 0 ? in->cosine_threshold : EG_DEDUP_COSINE_DEFAULT;
  r->state = st;
  return EG_OK;
}

/* The next unexpired ACTIVE memory after the cursor. */
struct eg_dd_next {
  int64_t now_us;
  int found;
  eg_memory_pos pos;
  uint64_t visited;
};

static int eg_dd_next_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *m,
                            const uint8_t *vec) {
  struct eg_dd_next *n = arg;
  n->visited++;
  if (m->state != EG_MSTATE_ACTIVE || eg_memory_expired(m->expire_us, n->now_us)) return 0;
  n->found = 1;
  n->pos = *pos;
  return 1;
}

/* Examines the memory at pos (ACTIVE): compared with the older ACTIVE
 * memories of its type, as CreateMemory's MARK would. r is the step's own
 * request (a scratch arena freed after each memory). */
static eg_err eg_dd_examine(eg_req *r, eg_txn *t, struct eg_dd_state *st, const eg_memory_pos *pos,
                            struct eg_dd_progress *p, uint64_t *visited) {
  char *id;
  eg_memory_rec *rec, *match;
  struct eg_dedup d;
  eg_err e = eg_pos_to_id(r, pos->buf, pos->len, &id);
  if (e || (e = eg_memory_load(r, t, id, 0, &rec))) return e;
  struct eg_probe probe = {.rec = rec, .jt = st->jt, .ct = st->ct, .self = pos, .older_only = 1};
  if (rec->dim > 0) {
    if ((e = eg_store_memory_vector(t, r->tenant, rec, st->vec))) return e;
    probe.vec = st->vec;
  }
  e = eg_dedup_run(r, t, &probe, &d);
  *visited += d.visited;
  p->examined++;
  if (e || !d.found || (e = eg_dedup_match(r, t, &d, &match))) return e;
  if (eg_dedup_decide(EG_POLICY_MARK, rec->importance, match->importance) == EG_DEDUP_OLD_IS_DUP) {
    p->superseded++;
    return eg_mark(r, t, match, EG_MSTATE_DUPLICATE, rec->memory_id);
  }
  p->duplicates++;
  return eg_mark(r, t, rec, EG_MSTATE_DUPLICATE, match->memory_id);
}

static eg_err eg_dd_apply(eg_req *r, eg_txn *t) {
  /* The one state an apply changes: see struct eg_dd_state. */
  struct eg_dd_state *st = r->state;
  uint64_t lsn = eg_store_last_lsn(r->srv->store);
  if (st->has_pending && lsn > st->pending_lsn) st->done = st->pending;
  st->has_pending = 0;
  struct eg_dd_progress p = st->done;
  uint64_t visited = 0, budget = (uint64_t)r->srv->cfg->dedup_batch;
  int finished = 0;
  eg_err e = EG_OK;
  p.batches++;
  while (!e && !finished && visited < budget) {
    /* Per memory, a scratch arena: one call may examine every memory of
     * the user, and the call's own arena lives until the call ends. */
    eg_req sub = *r;
    if (!(sub.arena = eg_arena_new())) return EG_ENOMEM;
    struct eg_dd_next next = {.now_us = r->now_us};
    e = eg_store_memories_scan(t, r->tenant, st->user_id, p.started ? &p.cursor : NULL, 0, 0,
                               eg_dd_next_visit, &next);
    visited += next.visited;
    if (!e && !next.found) finished = 1;
    if (!e && next.found) {
      e = eg_dd_examine(&sub, t, st, &next.pos, &p, &visited);
      p.cursor = next.pos;
      p.started = 1;
    }
    if (e) memcpy(r->msg, sub.msg, sizeof r->msg);
    eg_arena_free(sub.arena);
  }
  if (e) return e;
  if (!finished) {
    st->pending = p;
    st->pending_lsn = lsn;
    st->has_pending = 1;
    r->more = 1;
    snprintf(r->msg, sizeof r->msg,
             "the pass stopped at the call's deadline after %lld batches: %lld memories examined, "
             "%lld duplicates and %lld superseded marked (kept); call again to finish it",
             (long long)p.batches, (long long)p.examined, (long long)p.duplicates,
             (long long)p.superseded);
    return EG_OK;
  }
  Engram__V1__DeduplicateMemoriesResponse *out =
      EG_ARENA_NEW(r->arena, Engram__V1__DeduplicateMemoriesResponse);
  if (!out) return EG_ENOMEM;
  engram__v1__deduplicate_memories_response__init(out);
  out->examined = p.examined;
  out->duplicates = p.duplicates;
  out->superseded = p.superseded;
  out->batches = p.batches;
  r->resp = &out->base;
  return EG_OK;
}

/* ==== the table ================================================================================ */

#define EG_MEMORY_PATH(name) "/engram.v1.MemoryService/" #name
#define EG_READ(name, req, fn) \
  {.path = EG_MEMORY_PATH(name), .in = &req, .role = EG_ROLE_AGENT, .read = fn}
#define EG_WRITE(name, req, prep, app) \
  {.path = EG_MEMORY_PATH(name), .in = &req, .role = EG_ROLE_AGENT, .prepare = prep, .apply = app}

const eg_method eg_memory_methods[] = {
    EG_WRITE(CreateMemory, engram__v1__create_memory_request__descriptor, eg_create_memory_prepare,
             eg_create_memory_apply),
    EG_READ(GetMemory, engram__v1__get_memory_request__descriptor, eg_get_memory),
    {.path = EG_MEMORY_PATH(UpdateMemory), .in = &engram__v1__update_memory_request__descriptor,
     .role = EG_ROLE_AGENT, .prepare = eg_um_prepare, .apply = eg_um_apply, .prepare_reads = 1},
    EG_WRITE(DeleteMemory, engram__v1__delete_memory_request__descriptor, eg_dm_prepare, eg_dm_apply),
    EG_READ(ListMemories, engram__v1__list_memories_request__descriptor, eg_list_memories),
    EG_READ(SearchMemories, engram__v1__search_memories_request__descriptor, eg_search_memories),
    {.path = EG_MEMORY_PATH(DeduplicateMemories),
     .in = &engram__v1__deduplicate_memories_request__descriptor,
     .role = EG_ROLE_AGENT,
     .prepare = eg_dd_prepare,
     .apply = eg_dd_apply,
     .more_stops_at_deadline = 1},
    EG_WRITE(BatchCreateMemories, engram__v1__batch_create_memories_request__descriptor,
             eg_batch_create_prepare, eg_batch_create_apply),
    EG_WRITE(BatchDeleteMemories, engram__v1__batch_delete_memories_request__descriptor,
             eg_batch_delete_prepare, eg_batch_delete_apply),
    {.path = NULL},
};
