/* Memories: records, the derived per-user meta, vectors and postings, the
 * per-user counters, scans, and the bounded erasure of a user (see
 * storage/memories.h for the key layout). */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "storage/internal.h"

#define EG_MEMORY_DESC (&engram__storage__v1__memory_record__descriptor)
/* 1: no quantized vector; 2: f32 qscale | u32 qsum | int8 q[dim] after the
 * tag hashes when dim > 0; 3: layout 2, then the filter block:
 *   u32 index_version | u16 n_ns | u16 n_md | u64 agent_hash |
 *   u64 source_hash | u64 ns_hashes[n_ns] | u64 md_hashes[n_md]
 * (at the end, so the fields search reads first stay where 2 had them);
 * 4: layout 3 with u32 blind_key_id after the filter block's fixed part.
 * All four decode; only 4 is written. */
#define EG_META_LAYOUT 4
#define EG_META_FIXED 56 /* bytes before the tag hashes */
#define EG_META_FILTERS_FIXED 24 /* the filter block before its hash arrays (layout 3) */
#define EG_META_FILTERS_FIXED4 28 /* layout 4: the same and blind_key_id */
#define EG_COUNTERS_LAYOUT 1
#define EG_COUNTERS_LEN (8 + 4 * 8)
#define EG_ERASE_SUFFIX "\0erase"
#define EG_ERASE_SUFFIX_LEN 6
#define EG_ERASE_LEN 32 /* u64 BE: sessions, messages, memories, steps */

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "memory vectors are stored as the host's float32; this build assumes little-endian"
#endif

/* ==== small encoders ========================================================= */

static void eg_le16_put(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void eg_le32_put(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void eg_le64_put(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t eg_le16_get(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t eg_le32_get(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t eg_le64_get(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void eg_f32_put(uint8_t *p, float v) { memcpy(p, &v, 4); }
static float eg_f32_get(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

uint64_t eg_memory_meta_tag(const eg_memory_meta *m, unsigned i) {
  return eg_le64_get(m->tag_hashes + 8 * (size_t)i);
}

uint64_t eg_memory_meta_hash(const uint8_t *hashes, unsigned i) {
  return eg_le64_get(hashes + 8 * (size_t)i);
}

void eg_memory_pos_of(const eg_memory_rec *rec, eg_memory_pos *pos) {
  size_t n = strlen(rec->memory_id);
  eg_be64_put(pos->buf, (uint64_t)rec->create_time_us);
  memcpy(pos->buf + 8, rec->memory_id, n);
  pos->len = 8 + n;
}

void eg_memory_pos_split(const eg_memory_pos *p, int64_t *create_us, const char **id,
                         size_t *id_len) {
  *create_us = (int64_t)eg_be64_get(p->buf);
  *id = (const char *)p->buf + 8;
  *id_len = p->len - 8;
}

/* The int8 copy of vec (dim floats) that search scans first: q[i] =
 * round(vec[i] / scale) with scale = max |vec[i]| / 127, so each component
 * is off by at most scale / 2 (the bound search uses to stay exact). */
static void eg_quantize(const float *vec, size_t dim, float *scale, uint32_t *sum, int8_t *q) {
  float max = 0;
  for (size_t i = 0; i < dim; i++) {
    float a = fabsf(vec[i]);
    if (a > max) max = a;
  }
  *scale = max > 0 ? max / 127.0f : 1.0f;
  *sum = 0;
  for (size_t i = 0; i < dim; i++) {
    float x = rintf(vec[i] / *scale);
    q[i] = (int8_t)(x > 127 ? 127 : x < -127 ? -127 : x);
    *sum += (uint32_t)(q[i] < 0 ? -q[i] : q[i]);
  }
}

/* Bytes eg_meta_encode needs at most. */
#define EG_META_MAX                                                            \
  (EG_META_FIXED + 8 * EG_MEMORY_TAGS_MAX + 8 + EG_MEMORY_DIM_MAX + EG_META_FILTERS_FIXED4 + \
   8 * (EG_MEMORY_NS_HASHES_MAX + EG_MEMORY_MD_HASHES_MAX))

/* Encodes rec's meta into b (EG_META_MAX bytes), with the quantized copy
 * of vec (rec->dim floats; NULL only when rec->dim is 0); returns its
 * length. */
static size_t eg_meta_encode(const eg_memory_rec *rec, const float *vec, uint8_t *b) {
  b[0] = EG_META_LAYOUT;
  b[1] = (uint8_t)rec->state;
  b[2] = (uint8_t)rec->type;
  b[3] = (uint8_t)rec->flags;
  eg_le16_put(b + 4, (uint16_t)rec->dim);
  eg_le16_put(b + 6, (uint16_t)rec->n_tag_hashes);
  eg_le32_put(b + 8, (uint32_t)rec->n_term_hashes);
  eg_f32_put(b + 12, rec->importance);
  eg_f32_put(b + 16, rec->confidence);
  eg_f32_put(b + 20, rec->norm);
  eg_le64_put(b + 24, (uint64_t)rec->create_time_us);
  eg_le64_put(b + 32, (uint64_t)rec->update_time_us);
  eg_le64_put(b + 40, (uint64_t)rec->expire_time_us);
  eg_le64_put(b + 48, rec->category_hash);
  for (size_t i = 0; i < rec->n_tag_hashes; i++)
    eg_le64_put(b + EG_META_FIXED + 8 * i, rec->tag_hashes[i]);
  size_t n = EG_META_FIXED + 8 * rec->n_tag_hashes;
  if (rec->dim > 0) {
    float scale;
    uint32_t sum;
    eg_quantize(vec, (size_t)rec->dim, &scale, &sum, (int8_t *)(b + n + 8));
    eg_f32_put(b + n, scale);
    eg_le32_put(b + n + 4, sum);
    n += 8 + (size_t)rec->dim;
  }
  eg_le32_put(b + n, rec->index_version ? rec->index_version : 1);
  eg_le16_put(b + n + 4, (uint16_t)rec->n_namespace_hashes);
  eg_le16_put(b + n + 6, (uint16_t)rec->n_metadata_hashes);
  eg_le64_put(b + n + 8, rec->agent_hash);
  eg_le64_put(b + n + 16, rec->source_hash);
  eg_le32_put(b + n + 24, rec->blind_key_id);
  n += EG_META_FILTERS_FIXED4;
  for (size_t i = 0; i < rec->n_namespace_hashes; i++, n += 8)
    eg_le64_put(b + n, rec->namespace_hashes[i]);
  for (size_t i = 0; i < rec->n_metadata_hashes; i++, n += 8)
    eg_le64_put(b + n, rec->metadata_hashes[i]);
  return n;
}

/* Decodes the filter block of layout 3 or 4 at b[0..len) (all of the
 * value left). */
static eg_err eg_meta_filters_decode(const uint8_t *b, size_t len, unsigned layout,
                                     eg_memory_meta *m) {
  size_t fixed = layout == 4 ? EG_META_FILTERS_FIXED4 : EG_META_FILTERS_FIXED;
  if (len < fixed) return EG_ECORRUPT;
  m->blind_key_id = layout == 4 ? eg_le32_get(b + 24) : 0;
  m->index_version = eg_le32_get(b);
  m->n_ns = eg_le16_get(b + 4);
  m->n_md = eg_le16_get(b + 6);
  m->agent_hash = eg_le64_get(b + 8);
  m->source_hash = eg_le64_get(b + 16);
  if (m->n_ns > EG_MEMORY_NS_HASHES_MAX || m->n_md > EG_MEMORY_MD_HASHES_MAX ||
      len != fixed + 8 * ((size_t)m->n_ns + m->n_md))
    return EG_ECORRUPT;
  m->ns_hashes = b + fixed;
  m->md_hashes = m->ns_hashes + 8 * (size_t)m->n_ns;
  m->has_filters = 1;
  return EG_OK;
}

static eg_err eg_meta_decode(const MDB_val *v, eg_memory_meta *m) {
  const uint8_t *b = v->mv_data;
  if (v->mv_size < EG_META_FIXED || b[0] < 1 || b[0] > EG_META_LAYOUT) return EG_ECORRUPT;
  m->state = b[1];
  m->type = b[2];
  m->flags = b[3];
  m->dim = eg_le16_get(b + 4);
  m->n_tags = eg_le16_get(b + 6);
  m->n_terms = eg_le32_get(b + 8);
  m->importance = eg_f32_get(b + 12);
  m->confidence = eg_f32_get(b + 16);
  m->norm = eg_f32_get(b + 20);
  m->create_us = (int64_t)eg_le64_get(b + 24);
  m->update_us = (int64_t)eg_le64_get(b + 32);
  m->expire_us = (int64_t)eg_le64_get(b + 40);
  m->category_hash = eg_le64_get(b + 48);
  size_t n = EG_META_FIXED + 8 * (size_t)m->n_tags;
  m->tag_hashes = b + EG_META_FIXED;
  m->qvec = NULL;
  m->qscale = 0;
  m->qsum = 0;
  /* Layouts 1 and 2: postings of tokenizer 1, filters on the record. */
  m->index_version = 1;
  m->has_filters = 0;
  m->blind_key_id = 0;
  m->agent_hash = m->source_hash = 0;
  m->n_ns = m->n_md = 0;
  m->ns_hashes = m->md_hashes = NULL;
  if (v->mv_size < n) return EG_ECORRUPT;
  if (b[0] >= 2 && m->dim) {
    if (v->mv_size < n + 8 + m->dim) return EG_ECORRUPT;
    m->qscale = eg_f32_get(b + n);
    m->qsum = eg_le32_get(b + n + 4);
    m->qvec = (const int8_t *)(b + n + 8);
    n += 8 + m->dim;
  }
  if (b[0] >= 3) return eg_meta_filters_decode(b + n, v->mv_size - n, b[0], m);
  return v->mv_size == n ? EG_OK : EG_ECORRUPT;
}

/* ==== keys =================================================================== */

static eg_err eg_key_memory(eg_key *k, const char *tenant, const char *memory_id) {
  eg_key_init(k);
  eg_err e = eg_key_id(k, tenant);
  return e ? e : eg_key_tail(k, memory_id);
}

static eg_err eg_key_mpos(eg_key *k, const char *tenant, const char *user_id, int64_t create_us,
                          const char *memory_id) {
  if (create_us < 0) return EG_EINVAL;
  eg_err e = eg_key_user(k, tenant, user_id);
  if (!e) e = eg_key_u64(k, (uint64_t)create_us);
  return e ? e : eg_key_tail(k, memory_id);
}

static eg_err eg_key_term(eg_key *k, const char *tenant, const char *user_id, uint64_t term,
                          const char *memory_id) {
  eg_err e = eg_key_user(k, tenant, user_id);
  if (!e) e = eg_key_u64(k, term);
  return e || !memory_id ? e : eg_key_tail(k, memory_id);
}

static eg_err eg_key_erase(eg_key *k, const char *tenant, const char *user_id) {
  eg_err e = eg_key_user(k, tenant, user_id);
  return e ? e : eg_key_raw(k, EG_ERASE_SUFFIX, EG_ERASE_SUFFIX_LEN);
}

/* ==== counters ================================================================ */

static eg_err eg_counters_get(MDB_txn *txn, MDB_dbi dbi, const eg_key *k, eg_memory_counters *c) {
  MDB_val key = {k->len, (void *)k->buf}, v;
  memset(c, 0, sizeof *c);
  int rc = mdb_get(txn, dbi, &key, &v);
  if (rc == MDB_NOTFOUND) return EG_OK;
  if (rc) return eg_store__err(rc);
  const uint8_t *b = v.mv_data;
  if (v.mv_size != EG_COUNTERS_LEN || b[0] != EG_COUNTERS_LAYOUT) return EG_ECORRUPT;
  c->dim = eg_le32_get(b + 4);
  for (int i = 0; i < 4; i++) c->count[i] = eg_le64_get(b + 8 + 8 * i);
  return EG_OK;
}

static eg_err eg_counters_put(eg_txn *t, const eg_key *k, const eg_memory_counters *c) {
  uint8_t b[EG_COUNTERS_LEN] = {EG_COUNTERS_LAYOUT};
  eg_le32_put(b + 4, c->dim);
  for (int i = 0; i < 4; i++) eg_le64_put(b + 8 + 8 * i, c->count[i]);
  return eg_store__put(t, t->s->memory_users, k, b, sizeof b);
}

eg_err eg_store_memory_counters(eg_txn *t, const char *tenant, const char *user_id,
                                eg_memory_counters *out) {
  eg_key k;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_user(&k, tenant, user_id);
  return e ? e : eg_counters_get(t->txn, t->s->memory_users, &k, out);
}

/* Moves one memory from state `from` (0: none) to `to` (0: none). */
static eg_err eg_counters_move(eg_txn *t, const char *tenant, const char *user_id, int from, int to,
                               uint32_t dim) {
  eg_memory_counters c;
  eg_key k;
  eg_err e = eg_key_user(&k, tenant, user_id);
  if (!e) e = eg_counters_get(t->txn, t->s->memory_users, &k, &c);
  if (e) return e;
  if (from > 0 && from < 4 && c.count[from] > 0) c.count[from]--;
  if (to > 0 && to < 4) c.count[to]++;
  if (dim && !c.dim) c.dim = dim;
  return eg_counters_put(t, &k, &c);
}

/* ==== records ================================================================== */

eg_err eg_store_memory_get(eg_txn *t, const char *tenant, const char *memory_id,
                           eg_memory_rec **out) {
  eg_key k;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_memory(&k, tenant, memory_id);
  if (e) return e;
  return eg_store__get_msg(t->txn, t->s->memories, &k, EG_MEMORY_DESC, (ProtobufCMessage **)out);
}

static eg_err eg_rec_check(const eg_memory_rec *rec) {
  if (!rec || rec->create_time_us < 0 || rec->dim < 0 || rec->dim > EG_MEMORY_DIM_MAX ||
      rec->n_tag_hashes > EG_MEMORY_TAGS_MAX || rec->state < 1 || rec->state > EG_MSTATE_SUPERSEDED ||
      rec->n_namespace_hashes > EG_MEMORY_NS_HASHES_MAX ||
      rec->n_metadata_hashes > EG_MEMORY_MD_HASHES_MAX ||
      !eg_store__u64_ascending(rec->term_hashes, rec->n_term_hashes))
    return EG_EINVAL;
  assert(rec->base.descriptor == EG_MEMORY_DESC);
  return EG_OK;
}

static eg_err eg_posting_put(eg_txn *t, const char *tenant, const eg_memory_rec *rec, uint64_t term) {
  eg_key k;
  uint8_t v[8];
  eg_err e = eg_key_term(&k, tenant, rec->user_id, term, rec->memory_id);
  if (e) return e;
  eg_be64_put(v, (uint64_t)rec->create_time_us);
  return eg_store__put(t, t->s->memory_terms, &k, v, sizeof v);
}

static eg_err eg_posting_del(eg_txn *t, const char *tenant, const eg_memory_rec *rec, uint64_t term) {
  eg_key k;
  eg_err e = eg_key_term(&k, tenant, rec->user_id, term, rec->memory_id);
  return e ? e : eg_store__del_quiet(t, t->s->memory_terms, &k);
}

/* Deletes prev's postings rec lacks and adds rec's prev lacks (both sorted). */
static eg_err eg_postings_move(eg_txn *t, const char *tenant, const eg_memory_rec *rec,
                               const eg_memory_rec *prev) {
  size_t i = 0, j = 0, n = rec->n_term_hashes, m = prev ? prev->n_term_hashes : 0;
  eg_err e = EG_OK;
  while (!e && (i < n || j < m)) {
    if (j == m || (i < n && rec->term_hashes[i] < prev->term_hashes[j]))
      e = eg_posting_put(t, tenant, rec, rec->term_hashes[i++]);
    else if (i == n || prev->term_hashes[j] < rec->term_hashes[i])
      e = eg_posting_del(t, tenant, prev, prev->term_hashes[j++]);
    else
      i++, j++;
  }
  return e;
}

/* The vector the meta of rec is made from: vec, or (NULL: unchanged) the
 * stored one, copied into buf. */
static eg_err eg_meta_vector(eg_txn *t, const eg_key *pk, const eg_memory_rec *rec,
                             const eg_memory_rec *prev, const float *vec, float *buf,
                             const float **out) {
  *out = vec;
  if (vec || rec->dim == 0) return EG_OK;
  if (!prev || prev->dim != rec->dim) return EG_EINVAL; /* a new dimension needs its vector */
  MDB_val key = {pk->len, (void *)pk->buf}, v;
  int rc = mdb_get(t->txn, t->s->memory_vectors, &key, &v);
  if (rc == MDB_NOTFOUND) return EG_ECORRUPT;
  if (rc) return eg_store__err(rc);
  if (v.mv_size != sizeof(float) * (size_t)rec->dim) return EG_ECORRUPT;
  memcpy(buf, v.mv_data, v.mv_size);
  *out = buf;
  return EG_OK;
}

eg_err eg_store_memory_put(eg_txn *t, const char *tenant, const eg_memory_rec *rec,
                           const eg_memory_rec *prev, const float *vec) {
  uint8_t meta[EG_META_MAX];
  float buf[EG_MEMORY_DIM_MAX];
  const float *mvec;
  eg_key k, pk;
  if (!eg_txn_writable(t) || eg_rec_check(rec)) return EG_EINVAL;
  if (prev && (strcmp(prev->user_id, rec->user_id) != 0 ||
               prev->create_time_us != rec->create_time_us))
    return EG_EINVAL;
  /* A shallow copy: only state_time_us may differ from rec. */
  eg_memory_rec stored = *rec;
  if (!prev || prev->state != rec->state) stored.state_time_us = rec->update_time_us;
  /* Records from before state_time_us existed have 0: their last update
   * is the state's time, not this write's (or retention restarts). */
  else stored.state_time_us = prev->state_time_us ? prev->state_time_us : prev->update_time_us;
  if (stored.state_time_us < 0 || rec->expire_time_us < 0) return EG_EINVAL;
  eg_err e = eg_key_memory(&k, tenant, rec->memory_id);
  if (!e) e = eg_key_mpos(&pk, tenant, rec->user_id, rec->create_time_us, rec->memory_id);
  if (!e) e = eg_meta_vector(t, &pk, rec, prev, vec, buf, &mvec);
  if (!e) e = eg_store__put_msg(t, t->s->memories, &k, &stored.base, prev ? 0 : MDB_NOOVERWRITE);
  if (!e) e = eg_store__memory_index(t, tenant, prev, &stored);
  if (!e) e = eg_store__put(t, t->s->memories_by_user, &pk, meta, eg_meta_encode(rec, mvec, meta));
  if (e) return e;
  if (vec && rec->dim)
    e = eg_store__put(t, t->s->memory_vectors, &pk, vec, sizeof(float) * (size_t)rec->dim);
  else if (!rec->dim && prev && prev->dim)
    e = eg_store__del_quiet(t, t->s->memory_vectors, &pk);
  if (!e) e = eg_postings_move(t, tenant, rec, prev);
  if (!e && (!prev || prev->state != rec->state || (rec->dim && !prev->dim)))
    e = eg_counters_move(t, tenant, rec->user_id, prev ? prev->state : 0, rec->state,
                         (uint32_t)rec->dim);
  return e;
}

eg_err eg_store_memory_purge(eg_txn *t, const char *tenant, const eg_memory_rec *rec) {
  eg_key k, pk;
  if (!eg_txn_writable(t) || eg_rec_check(rec)) return EG_EINVAL;
  eg_err e = eg_key_memory(&k, tenant, rec->memory_id);
  if (!e) e = eg_key_mpos(&pk, tenant, rec->user_id, rec->create_time_us, rec->memory_id);
  if (!e) e = eg_store__del(t, t->s->memories, &k);
  /* Index entries missing: the rest still goes. */
  if (!e) e = eg_store__del_quiet(t, t->s->memories_by_user, &pk);
  if (!e && rec->dim) e = eg_store__del_quiet(t, t->s->memory_vectors, &pk);
  for (size_t i = 0; !e && i < rec->n_term_hashes; i++)
    e = eg_posting_del(t, tenant, rec, rec->term_hashes[i]);
  if (!e) e = eg_counters_move(t, tenant, rec->user_id, rec->state, 0, 0);
  if (!e) e = eg_store__memory_index(t, tenant, rec, NULL);
  return e;
}

eg_err eg_store_memory_vector(eg_txn *t, const char *tenant, const eg_memory_rec *rec, float *out) {
  eg_key pk;
  MDB_val key, v;
  if (!eg_txn_readable(t) || !rec || rec->dim <= 0) return EG_EINVAL;
  eg_err e = eg_key_mpos(&pk, tenant, rec->user_id, rec->create_time_us, rec->memory_id);
  if (e) return e;
  key = (MDB_val){pk.len, pk.buf};
  int rc = mdb_get(t->txn, t->s->memory_vectors, &key, &v);
  if (rc == MDB_NOTFOUND) return EG_ECORRUPT; /* the record says there is one */
  if (rc) return eg_store__err(rc);
  if (v.mv_size != sizeof(float) * (size_t)rec->dim) return EG_ECORRUPT;
  memcpy(out, v.mv_data, v.mv_size);
  return EG_OK;
}

/* ==== scans ===================================================================== */

static eg_err eg_pos_from_key(const MDB_val *k, size_t prefix_len, eg_memory_pos *pos) {
  size_t n = k->mv_size - prefix_len;
  if (n < 9 || n > EG_MEMORY_POS_MAX) return EG_ECORRUPT;
  memcpy(pos->buf, (const uint8_t *)k->mv_data + prefix_len, n);
  pos->len = n;
  return EG_OK;
}

/* Positions vc on key k of memory_vectors: one step from where it stands
 * (the scans visit both DBs in the same order), else a seek. */
static int eg_vector_follow(MDB_cursor *vc, int *positioned, MDB_cursor_op step, const MDB_val *k,
                            MDB_val *vv) {
  MDB_val vk;
  if (*positioned && mdb_cursor_get(vc, &vk, vv, step) == MDB_SUCCESS &&
      vk.mv_size == k->mv_size && memcmp(vk.mv_data, k->mv_data, k->mv_size) == 0)
    return MDB_SUCCESS;
  vk = *k;
  int rc = mdb_cursor_get(vc, &vk, vv, MDB_SET_KEY);
  *positioned = rc == MDB_SUCCESS;
  return rc;
}

/* An rc next to LMDB's own for "this position or key cannot be ours": below
 * MDB_KEYEXIST, the lowest code LMDB uses (new ones are added above
 * MDB_LAST_ERRCODE), and negative, unlike the errno values LMDB returns,
 * so an LMDB EINVAL is never mistaken for it. */
#define EG_RC_BAD_POS (MDB_KEYEXIST - 1)
_Static_assert(EG_RC_BAD_POS < 0 && EG_RC_BAD_POS < MDB_KEYEXIST, "outside LMDB's codes");

/* Where a scan starts: its first key, or rc MDB_NOTFOUND, or
 * EG_RC_BAD_POS for an `after` that is no position of ours. */
static int eg_scan_start(MDB_cursor *c, const eg_key *prefix, const eg_memory_pos *after,
                         int descending, MDB_val *k, MDB_val *v) {
  eg_key seek = *prefix;
  if (!after && !descending) {
    *k = (MDB_val){prefix->len, (void *)prefix->buf};
    return mdb_cursor_get(c, k, v, MDB_SET_RANGE);
  }
  if (after) {
    if (eg_key_raw(&seek, after->buf, after->len)) return EG_RC_BAD_POS;
  } else {
    uint8_t ff[EG_MEMORY_POS_MAX + 1];
    memset(ff, 0xff, sizeof ff);
    if (eg_key_raw(&seek, ff, sizeof ff)) return EG_RC_BAD_POS;
  }
  if (descending) return eg_store__seek_below(c, &seek, 0, k, v);
  *k = (MDB_val){seek.len, seek.buf};
  int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
  if (rc == MDB_SUCCESS && k->mv_size == seek.len && memcmp(k->mv_data, seek.buf, seek.len) == 0)
    rc = mdb_cursor_get(c, k, v, MDB_NEXT);
  return rc;
}

eg_err eg_store_memories_scan(eg_txn *t, const char *tenant, const char *user_id,
                              const eg_memory_pos *after, int descending, int want_vectors,
                              eg_memory_visit_fn fn, void *arg) {
  eg_key prefix;
  MDB_cursor *c = NULL, *vc = NULL;
  MDB_val k, v, vv;
  eg_memory_pos pos;
  eg_memory_meta meta;
  int positioned = 0;
  MDB_cursor_op step = descending ? MDB_PREV : MDB_NEXT;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  if (after && (after->len < 9 || after->len > EG_MEMORY_POS_MAX)) return EG_EINVAL;
  eg_err e = eg_key_user(&prefix, tenant, user_id);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, t->s->memories_by_user, &c);
  if (!rc && want_vectors) rc = mdb_cursor_open(t->txn, t->s->memory_vectors, &vc);
  if (!rc) rc = eg_scan_start(c, &prefix, after, descending, &k, &v);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &prefix)) {
    if ((e = eg_pos_from_key(&k, prefix.len, &pos)) || (e = eg_meta_decode(&v, &meta))) break;
    const uint8_t *vec = NULL;
    if (vc && meta.dim) {
      rc = eg_vector_follow(vc, &positioned, step, &k, &vv);
      if (rc == MDB_NOTFOUND || (!rc && vv.mv_size != sizeof(float) * meta.dim)) {
        e = EG_ECORRUPT;
        break;
      }
      if (rc) break;
      vec = vv.mv_data;
    }
    if (fn(arg, &pos, &meta, vec)) break;
    rc = mdb_cursor_get(c, &k, &v, step);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  if (vc) mdb_cursor_close(vc);
  if (c) mdb_cursor_close(c);
  return e ? e : rc == EG_RC_BAD_POS ? EG_EINVAL : eg_store__err(rc);
}

eg_err eg_store_memory_meta_at(eg_txn *t, const char *tenant, const char *user_id,
                               const eg_memory_pos *pos, int want_vector, eg_memory_meta *meta,
                               const uint8_t **vec) {
  eg_key k;
  MDB_val key, v;
  if (!eg_txn_readable(t) || !pos || pos->len < 9) return EG_EINVAL;
  eg_err e = eg_key_user(&k, tenant, user_id);
  if (!e) e = eg_key_raw(&k, pos->buf, pos->len);
  if (e) return e;
  key = (MDB_val){k.len, k.buf};
  e = eg_store__err(mdb_get(t->txn, t->s->memories_by_user, &key, &v));
  if (!e) e = eg_meta_decode(&v, meta);
  if (e || !vec) return e;
  *vec = NULL;
  if (!want_vector || !meta->dim) return EG_OK;
  e = eg_store__err(mdb_get(t->txn, t->s->memory_vectors, &key, &v));
  if (e == EG_ENOTFOUND || (!e && v.mv_size != sizeof(float) * meta->dim)) return EG_ECORRUPT;
  if (!e) *vec = v.mv_data;
  return e;
}

eg_err eg_store_memory_postings(eg_txn *t, const char *tenant, const char *user_id,
                                uint64_t term, eg_posting_visit_fn fn, void *arg) {
  eg_key prefix;
  MDB_cursor *c = NULL;
  MDB_val k, v;
  eg_memory_pos pos;
  eg_err e = EG_OK;
  if (!eg_txn_readable(t) || !fn) return EG_EINVAL;
  if ((e = eg_key_term(&prefix, tenant, user_id, term, NULL))) return e;
  int rc = mdb_cursor_open(t->txn, t->s->memory_terms, &c);
  k = (MDB_val){prefix.len, prefix.buf};
  if (!rc) rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &prefix)) {
    size_t idlen = k.mv_size - prefix.len;
    if (v.mv_size != 8 || idlen < 1 || idlen > EG_MEMORY_POS_MAX - 8) {
      e = EG_ECORRUPT;
      break;
    }
    memcpy(pos.buf, v.mv_data, 8);
    memcpy(pos.buf + 8, (const uint8_t *)k.mv_data + prefix.len, idlen);
    pos.len = 8 + idlen;
    if (fn(arg, &pos)) break;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  if (c) mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_store_memories_walk(eg_txn *t, const uint8_t *after, size_t after_len, size_t max,
                              eg_memory_walk_fn fn, void *arg, int *more) {
  MDB_cursor *c = NULL;
  MDB_val k, v;
  char tenant[EG_STORE_ID_MAX + 1];
  size_t seen = 0;
  eg_err e = EG_OK;
  *more = 0;
  if (!eg_txn_readable(t) || !fn || after_len > EG_KEY_MAX || (after_len && !after)) return EG_EINVAL;
  int rc = mdb_cursor_open(t->txn, t->s->memories, &c);
  if (rc) return eg_store__err(rc);
  k = (MDB_val){after_len, (void *)after};
  rc = after_len ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(c, &k, &v, MDB_FIRST);
  if (rc == MDB_SUCCESS && after_len && k.mv_size == after_len && memcmp(k.mv_data, after, after_len) == 0)
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (seen == max) {
      *more = 1;
      break;
    }
    /* u8len tenant | memory_id */
    const uint8_t *kb = k.mv_data;
    if (k.mv_size < 2 || kb[0] == 0 || kb[0] > EG_STORE_ID_MAX || (size_t)kb[0] + 1 >= k.mv_size) {
      e = EG_ECORRUPT;
      break;
    }
    memcpy(tenant, kb + 1, kb[0]);
    tenant[kb[0]] = '\0';
    eg_memory_rec *rec;
    if ((e = eg_store__decode(EG_MEMORY_DESC, &v, (ProtobufCMessage **)&rec))) break;
    seen++;
    if (fn(arg, kb, k.mv_size, tenant, rec)) {
      /* Stopped by the callee: say whether anything lies past its memory. */
      rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
      *more = rc == MDB_SUCCESS;
      break;
    }
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  mdb_cursor_close(c);
  return e ? e : eg_store__err(rc);
}

eg_err eg_store_user_sessions_count(eg_txn *t, const char *tenant, const char *user_id,
                                    uint64_t *out) {
  eg_key prefix;
  MDB_cursor *c = NULL;
  MDB_val k, v;
  uint64_t n = 0;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_user(&prefix, tenant, user_id);
  if (e) return e;
  int rc = mdb_cursor_open(t->txn, t->s->sessions_by_user, &c);
  k = (MDB_val){prefix.len, prefix.buf};
  if (!rc) rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  while (rc == MDB_SUCCESS && eg_key_has_prefix(k.mv_data, k.mv_size, &prefix)) {
    n++;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
  if (c) mdb_cursor_close(c);
  if (!rc) *out = n;
  return eg_store__err(rc);
}

/* ==== erasure ===================================================================== */

/* The first key under prefix in dbi, copied into out (EG_ENOTFOUND: none). */
static eg_err eg_first_key(eg_txn *t, MDB_dbi dbi, const eg_key *prefix, eg_key *out) {
  MDB_cursor *c;
  MDB_val k = {prefix->len, (void *)prefix->buf}, v;
  int rc = mdb_cursor_open(t->txn, dbi, &c);
  if (rc) return eg_store__err(rc);
  rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  if (rc == MDB_SUCCESS && !eg_key_has_prefix(k.mv_data, k.mv_size, prefix)) rc = MDB_NOTFOUND;
  if (rc == MDB_SUCCESS) {
    if (k.mv_size > EG_KEY_MAX) rc = EG_RC_BAD_POS;
    else memcpy(out->buf, k.mv_data, out->len = k.mv_size);
  }
  mdb_cursor_close(c);
  return rc == EG_RC_BAD_POS ? EG_ECORRUPT : eg_store__err(rc);
}

/* Deletes keys under prefix one by one until none is left (*left = 0) or
 * *spent reaches budget (*left = 1). Counts them into *n. */
eg_err eg_store__erase_range(eg_txn *t, MDB_dbi dbi, const eg_key *prefix, uint64_t budget,
                             uint64_t *spent, uint64_t *n, int *left) {
  eg_key k;
  eg_err e;
  *left = 0;
  for (;;) {
    e = eg_first_key(t, dbi, prefix, &k);
    if (e == EG_ENOTFOUND) return EG_OK;
    if (e) return e;
    if (*spent >= budget) return *left = 1, EG_OK;
    if ((e = eg_store__del(t, dbi, &k))) return e;
    ++*spent;
    if (n) ++*n;
  }
}

/* Erases the user's sessions (each with its messages and retry records). */
static eg_err eg_erase_sessions(eg_txn *t, const char *tenant, const eg_key *user, uint64_t budget,
                                uint64_t *spent, eg_erase_counts *c, int *left) {
  eg_key ik, range, sk;
  char sid[EG_STORE_ID_MAX + 1];
  for (;;) {
    eg_err e = eg_first_key(t, t->s->sessions_by_user, user, &ik);
    if (e == EG_ENOTFOUND) return *left = 0, EG_OK;
    if (e) return e;
    size_t n = ik.len - user->len;
    if (n < 9 || n - 8 > EG_STORE_ID_MAX) return EG_ECORRUPT;
    memcpy(sid, ik.buf + user->len + 8, n - 8);
    sid[n - 8] = '\0';
    if ((e = eg_key_session_range(&range, tenant, sid))) return e;
    /* The lifecycle entries first, while the record and the oldest
     * message still name them (a later step finds them gone). */
    if ((e = eg_key_session(&sk, tenant, sid))) return e;
    eg_session_rec *rec = NULL;
    e = eg_store__get_msg(t->txn, t->s->sessions, &sk, &engram__storage__v1__session_record__descriptor,
                          (ProtobufCMessage **)&rec);
    if (!e) e = eg_store__session_unindex(t, tenant, rec);
    if (rec) protobuf_c_message_free_unpacked(&rec->base, NULL);
    if (e && e != EG_ENOTFOUND) return e;
    if ((e = eg_store__erase_messages(t, tenant, sid, budget, spent, &c->messages, left)) || *left)
      return e;
    if ((e = eg_store__erase_range(t, t->s->idempotency, &range, budget, spent, NULL, left)) || *left)
      return e;
    if (*spent >= budget) return *left = 1, EG_OK;
    if ((e = eg_store__del_quiet(t, t->s->sessions, &sk)) ||
        (e = eg_store__del(t, t->s->sessions_by_user, &ik)))
      return e;
    *spent += 2;
    c->sessions++;
  }
}

/* Erases the user's memories: record, meta and vector of each. */
static eg_err eg_erase_memories(eg_txn *t, const char *tenant, const eg_key *user, uint64_t budget,
                                uint64_t *spent, eg_erase_counts *c, int *left) {
  eg_key pk, mk;
  char mid[EG_STORE_ID_MAX + 1];
  for (;;) {
    eg_err e = eg_first_key(t, t->s->memories_by_user, user, &pk);
    if (e == EG_ENOTFOUND) return *left = 0, EG_OK;
    if (e) return e;
    if (*spent >= budget) return *left = 1, EG_OK;
    size_t n = pk.len - user->len;
    if (n < 9 || n - 8 > EG_STORE_ID_MAX) return EG_ECORRUPT;
    memcpy(mid, pk.buf + user->len + 8, n - 8);
    mid[n - 8] = '\0';
    if ((e = eg_key_memory(&mk, tenant, mid))) return e;
    eg_memory_rec *rec = NULL;
    e = eg_store__get_msg(t->txn, t->s->memories, &mk, EG_MEMORY_DESC, (ProtobufCMessage **)&rec);
    if (!e) e = eg_store__memory_index(t, tenant, rec, NULL);
    if (rec) protobuf_c_message_free_unpacked(&rec->base, NULL);
    if (e && e != EG_ENOTFOUND) return e;
    if ((e = eg_store__del_quiet(t, t->s->memories, &mk)) ||
        (e = eg_store__del_quiet(t, t->s->memory_vectors, &pk)) ||
        (e = eg_store__del(t, t->s->memories_by_user, &pk)))
      return e;
    *spent += 3;
    c->memories++;
  }
}

static eg_err eg_erase_progress_get(eg_txn *t, const eg_key *k, eg_erase_counts *c) {
  MDB_val key = {k->len, (void *)k->buf}, v;
  memset(c, 0, sizeof *c);
  int rc = mdb_get(t->txn, t->s->memory_users, &key, &v);
  if (rc == MDB_NOTFOUND) return EG_OK;
  if (rc) return eg_store__err(rc);
  if (v.mv_size != EG_ERASE_LEN) return EG_ECORRUPT;
  c->sessions = eg_be64_get(v.mv_data);
  c->messages = eg_be64_get((const uint8_t *)v.mv_data + 8);
  c->memories = eg_be64_get((const uint8_t *)v.mv_data + 16);
  c->steps = eg_be64_get((const uint8_t *)v.mv_data + 24);
  return EG_OK;
}

static eg_err eg_erase_progress_put(eg_txn *t, const eg_key *k, const eg_erase_counts *c) {
  uint8_t b[EG_ERASE_LEN];
  eg_be64_put(b, c->sessions);
  eg_be64_put(b + 8, c->messages);
  eg_be64_put(b + 16, c->memories);
  eg_be64_put(b + 24, c->steps);
  return eg_store__put(t, t->s->memory_users, k, b, sizeof b);
}

eg_err eg_store_user_erasing(eg_txn *t, const char *tenant, const char *user_id, int *erasing) {
  eg_key pk;
  MDB_val v;
  *erasing = 0;
  if (!eg_txn_readable(t)) return EG_EINVAL;
  eg_err e = eg_key_erase(&pk, tenant, user_id);
  if (e) return e;
  MDB_val key = {pk.len, (void *)pk.buf};
  int rc = mdb_get(t->txn, t->s->memory_users, &key, &v);
  *erasing = rc == MDB_SUCCESS;
  return rc == MDB_NOTFOUND ? EG_OK : eg_store__err(rc);
}

eg_err eg_store_user_erase_step(eg_txn *t, const char *tenant, const char *user_id,
                                uint64_t budget, eg_erase_counts *counts, int *done) {
  eg_key user, pk;
  eg_erase_counts c;
  uint64_t spent = 0;
  int left = 0;
  if (!eg_txn_writable(t) || budget == 0) return EG_EINVAL;
  *done = 0;
  eg_err e = eg_key_user(&user, tenant, user_id);
  if (!e) e = eg_key_erase(&pk, tenant, user_id);
  if (!e) e = eg_erase_progress_get(t, &pk, &c);
  if (!e) e = eg_erase_sessions(t, tenant, &user, budget, &spent, &c, &left);
  if (!e && !left) e = eg_store__erase_purging(t, tenant, user_id, budget, &spent, &c.messages, &left);
  if (!e && !left) e = eg_erase_memories(t, tenant, &user, budget, &spent, &c, &left);
  if (!e && !left) e = eg_store__erase_range(t, t->s->memory_terms, &user, budget, &spent, NULL, &left);
  if (!e && !left) e = eg_store__erase_checkpoints(t, tenant, user_id, budget, &spent, &left);
  if (e) return e;
  c.steps++;
  if (left) return eg_erase_progress_put(t, &pk, &c);
  /* Everything else is gone: the counters and the progress record go last. */
  if ((e = eg_store__del_prefix(t, t->s->memory_users, &user, NULL))) return e;
  *counts = c;
  *done = 1;
  return EG_OK;
}
