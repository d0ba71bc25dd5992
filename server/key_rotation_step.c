/* One step of a data-key rotation: its walk and its write
 * (server/key_rotation_step.h). */
#include "server/key_rotation_step.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/convert.h"
#include "server/data_keys.h"
#include "server/key_rotation.h"

/* *_token fields one record has at most (a memory and a checkpoint: 3). */
#define EG_KR_TOKENS_MAX 4
#define EG_KR_SUFFIX "_token"

typedef Engram__Storage__V1__TokenCountRecord eg_count_rec;

static void eg_kr_row_free(void *p) {
  engram__storage__v1__data_key_rotation_record__free_unpacked(p, NULL);
}

eg_err eg_kr_row_get(eg_txn *t, eg_arena *a, eg_dk_rotation_rec **out) {
  eg_err e = eg_store_dk_rotation_get(t, out);
  if (e == EG_ENOTFOUND) {
    *out = NULL;
    return EG_OK;
  }
  if (e == EG_OK && eg_arena_defer(a, eg_kr_row_free, *out) != 0) {
    eg_kr_row_free(*out);
    return EG_ENOMEM;
  }
  return e;
}

/* ---- token counts ---------------------------------------------------------- */

/* Adds tokens to key in the arena array *arr of *n entries (a copy of a
 * row's, eg_counts_copy: an entry is replaced by a new one, never changed,
 * and a new key makes a new array). Past EG_TOKEN_COUNT_KEYS_MAX - 1 keys,
 * "other". */
static eg_err eg_count_add(eg_arena *a, eg_count_rec ***arr, size_t *n, const char *key,
                           uint64_t tokens) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp((*arr)[i]->key, key) == 0) {
      eg_count_rec *c = EG_ARENA_NEW(a, eg_count_rec);
      if (!c) return EG_ENOMEM;
      *c = *(*arr)[i];
      c->tokens += tokens;
      (*arr)[i] = c;
      return EG_OK;
    }
  if (*n >= EG_TOKEN_COUNT_KEYS_MAX - 1 && strcmp(key, "other") != 0)
    return eg_count_add(a, arr, n, "other", tokens);
  eg_count_rec **next = EG_ARENA_ARRAY(a, eg_count_rec *, *n + 1);
  eg_count_rec *c = EG_ARENA_NEW(a, eg_count_rec);
  if (!next || !c) return EG_ENOMEM;
  engram__storage__v1__token_count_record__init(c);
  if (!(c->key = eg_arena_strndup(a, key, strlen(key)))) return EG_ENOMEM;
  c->tokens = tokens;
  if (*n) memcpy(next, *arr, *n * sizeof *next);
  next[(*n)++] = c;
  *arr = next;
  return EG_OK;
}

/* Adds every count of src to *arr. */
static eg_err eg_counts_merge(eg_arena *a, eg_count_rec ***arr, size_t *n,
                              eg_count_rec *const *src, size_t n_src) {
  eg_err e = EG_OK;
  for (size_t i = 0; i < n_src && !e; i++) e = eg_count_add(a, arr, n, src[i]->key, src[i]->tokens);
  return e;
}

/* ---- token fields ----------------------------------------------------------- */

/* The *_token fields of d (bytes, singular), in descriptor order, into f;
 * how many. Their token context's field is the name without the suffix
 * ("metadata_token": "metadata"), as every service seals them. */
static size_t eg_token_fields(const ProtobufCMessageDescriptor *d,
                              const ProtobufCFieldDescriptor **f) {
  size_t n = 0, sl = strlen(EG_KR_SUFFIX);
  for (unsigned i = 0; i < d->n_fields && n < EG_KR_TOKENS_MAX; i++) {
    const ProtobufCFieldDescriptor *fd = &d->fields[i];
    size_t len = strlen(fd->name);
    if (fd->type == PROTOBUF_C_TYPE_BYTES && fd->label != PROTOBUF_C_LABEL_REPEATED &&
        len > sl && strcmp(fd->name + len - sl, EG_KR_SUFFIX) == 0)
      f[n++] = fd;
  }
  return n;
}

static ProtobufCBinaryData *eg_token_at(const ProtobufCMessage *m,
                                        const ProtobufCFieldDescriptor *f) {
  return (ProtobufCBinaryData *)((char *)m + f->offset);
}

/* ---- a step: the walk --------------------------------------------------------- */

enum { EG_KR_SESSION, EG_KR_MESSAGE, EG_KR_MEMORY, EG_KR_CKPT, EG_KR_CKPT_WRITE, EG_KR_ITEM };

/* A record the walk re-sealed a token of: where it is, its tokens as
 * walked and as re-sealed. */
typedef struct {
  int kind;
  const char *id;     /* session, memory, store item key */
  uint64_t seq;       /* message */
  const char *thread, *ns, *cid, *task; /* checkpoint, pending write */
  int32_t idx;
  eg_store_ns item_ns; /* store item */
  size_t n_tok;
  ProtobufCBinaryData old[EG_KR_TOKENS_MAX], neu[EG_KR_TOKENS_MAX];
} eg_kr_rec;

typedef struct {
  eg_txn *reader;
  eg_arena *a;
  eg_req r; /* what eg_field_open takes: tenant, arena, msg */
  const char *tenant, *user;
  uint32_t gen;               /* the generation re-sealed under: the row's */
  uint8_t key[EG_KEY_LEN];    /* its data key (wiped when the step ends) */
  const eg_dk_rotation_rec *from; /* the state as stored when the walk began */
  eg_dk_rotation_rec to;          /* the state after the step */
  /* The pass's counts were the step's records left as they are (its
   * re-sealed tokens under their old keys): to's when the step is
   * skipped (eg_kr_skip). */
  eg_count_rec **left_counts;
  size_t n_left_counts;
  size_t budget, walked;
  int stopped; /* at the budget, within the stage */
  eg_kr_rec *recs;
  size_t n, cap;
  eg_err err;
} eg_kr_step;

static eg_kr_rec *eg_kr_push(eg_kr_step *s, int kind) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 16;
    eg_kr_rec *next = EG_ARENA_ARRAY(s->a, eg_kr_rec, cap);
    if (!next) return NULL;
    if (s->n) memcpy(next, s->recs, s->n * sizeof *next);
    s->recs = next;
    s->cap = cap;
  }
  eg_kr_rec *rec = &s->recs[s->n++];
  memset(rec, 0, sizeof *rec);
  rec->kind = kind;
  return rec;
}

static char *eg_kr_dup(eg_kr_step *s, const char *p, size_t n) {
  char *d = eg_arena_strndup(s->a, p, n);
  if (!d) s->err = EG_ENOMEM;
  return d;
}

/* The key a token is under ("master:<id>", "data:<generation>") into key,
 * and whether it is an old one (not the user's current generation).
 * EG_ECORRUPT for a token of no known layout. */
static eg_err eg_kr_token_key(const eg_kr_step *s, const ProtobufCBinaryData *b, char *key,
                              int *old) {
  uint8_t version;
  uint32_t id;
  eg_err e = eg_token_version(b->data, b->len, &version);
  if (e) return e;
  if (version == EG_TOKEN_VERSION) {
    if ((e = eg_token_key_id(b->data, b->len, &id))) return e;
    snprintf(key, EG_TOKEN_COUNT_KEY_MAX, "master:%" PRIu32, id);
    *old = 1; /* format 1 moves to the user's data key */
    return EG_OK;
  }
  if ((e = eg_token_generation(b->data, b->len, &id))) return e;
  snprintf(key, EG_TOKEN_COUNT_KEY_MAX, "data:%" PRIu32, id);
  *old = id != s->gen;
  return EG_OK;
}

/* Reads rec's tokens (m, a record of the user, of kind and record id rid
 * in token contexts): counts each under its key into the pass's counts;
 * one under an old key is opened and sealed again under the current
 * generation (found). A record with none to re-seal is not kept. */
static eg_err eg_kr_tokens(eg_kr_step *s, eg_kr_rec *rec, const ProtobufCMessage *m,
                           const char *kind, const char *rid) {
  const ProtobufCFieldDescriptor *f[EG_KR_TOKENS_MAX];
  int resealed = 0;
  rec->n_tok = eg_token_fields(m->descriptor, f);
  for (size_t i = 0; i < rec->n_tok; i++) {
    const ProtobufCBinaryData *b = eg_token_at(m, f[i]);
    char key[EG_TOKEN_COUNT_KEY_MAX], *pt;
    size_t plen, nl = strlen(f[i]->name) - strlen(EG_KR_SUFFIX);
    int old = 0;
    uint8_t *copy = b->len ? eg_arena_alloc(s->a, b->len) : NULL;
    if (b->len && !copy) return EG_ENOMEM;
    if (b->len) memcpy(copy, b->data, b->len);
    rec->old[i] = rec->neu[i] = (ProtobufCBinaryData){b->len, copy};
    if (!b->len) continue;
    const char *field = eg_kr_dup(s, f[i]->name, nl);
    if (!field) return EG_ENOMEM;
    if (eg_kr_token_key(s, b, key, &old) != EG_OK) {
      eg_log(EG_LOG_WARN, "data-key rotation: %s %s of tenant %s: %s is no field token; left as "
             "it is", kind, rid, s->tenant, field);
      continue;
    }
    eg_err e = eg_count_add(s->a, &s->left_counts, &s->n_left_counts, key, 1);
    if (e) return e;
    e = old ? eg_field_open(&s->r, s->user, kind, rid, field, b, &pt, &plen) : EG_OK;
    if (e == EG_ENOMEM) return e;
    if (e) {
      /* Unreadable under any key: re-sealing is impossible, and retiring
       * its key makes it no less readable. */
      eg_log(EG_LOG_WARN, "data-key rotation: %s; left as it is", s->r.msg);
      old = 0;
    }
    if (old) {
      /* Under the row's generation, not whatever the cache calls current:
       * the one the passes check and the retire keeps. */
      eg_field_ctx ctx = {.tenant = s->tenant, .kind = kind, .record_id = rid, .field = field};
      uint8_t *tok = eg_arena_alloc(s->a, eg_token_len(plen));
      if (!tok) return EG_ENOMEM;
      e = eg_token_seal_dek(s->key, s->gen, &ctx, (const uint8_t *)pt, plen, tok);
      eg_memzero(pt, plen);
      if (e) return e;
      rec->neu[i] = (ProtobufCBinaryData){eg_token_len(plen), tok};
      s->to.found++;
      resealed = 1;
      snprintf(key, sizeof key, "data:%" PRIu32, s->gen);
    }
    if ((e = eg_count_add(s->a, &s->to.pass_counts, &s->to.n_pass_counts, key, 1))) return e;
  }
  if (!resealed) s->n--; /* nothing to write: the record is not kept */
  return EG_OK;
}

/* rid, the record just pushed of kind, its tokens from m. */
static int eg_kr_take(eg_kr_step *s, const ProtobufCMessage *m, const char *kind,
                      const char *rid) {
  if (!rid) s->err = EG_ENOMEM;
  if (!s->err) s->err = eg_kr_tokens(s, &s->recs[s->n - 1], m, kind, rid);
  s->walked++;
  return s->err != EG_OK;
}

static eg_err eg_kr_cursor(eg_kr_step *s, const void *p, size_t n) {
  uint8_t *c = n ? eg_arena_alloc(s->a, n) : NULL;
  if (n && !c) return s->err = EG_ENOMEM;
  if (n) memcpy(c, p, n);
  s->to.cursor = (ProtobufCBinaryData){n, c};
  return EG_OK;
}

/* sessions, each with its messages */
typedef struct {
  eg_kr_step *s;
  const char *sid;
  int stopped;
  uint64_t next; /* the seq the walk stopped before */
} eg_kr_msgs;

static int eg_kr_message_visit(void *arg, eg_message_rec *rec) {
  eg_kr_msgs *w = arg;
  eg_kr_step *s = w->s;
  int stop = 1;
  if (s->walked >= s->budget) {
    w->stopped = 1;
    w->next = (uint64_t)rec->seq;
  } else if (eg_kr_push(s, EG_KR_MESSAGE)) {
    s->recs[s->n - 1].id = w->sid;
    s->recs[s->n - 1].seq = (uint64_t)rec->seq;
    stop = eg_kr_take(s, &rec->base, "message", eg_message_record_id(&s->r, w->sid, rec->seq));
  } else {
    s->err = EG_ENOMEM;
  }
  engram__storage__v1__message_record__free_unpacked(rec, NULL);
  return stop;
}

static int eg_kr_session_visit(void *arg, eg_session_rec *rec, const eg_session_cursor *cur) {
  eg_kr_step *s = arg;
  eg_kr_msgs w = {.s = s};
  int stop = 1;
  /* The session whose messages the last step stopped in goes on from
   * there; any other (that one gone meanwhile) from its record. */
  uint64_t seq = s->to.seq && strcmp(s->to.session_id, rec->session_id) == 0 ? s->to.seq : 0;
  if (s->walked >= s->budget) {
    s->stopped = 1;
    goto out;
  }
  if (!(w.sid = eg_kr_dup(s, rec->session_id, strlen(rec->session_id)))) goto out;
  if (seq == 0) {
    if (!eg_kr_push(s, EG_KR_SESSION)) {
      s->err = EG_ENOMEM;
      goto out;
    }
    s->recs[s->n - 1].id = w.sid;
    if (eg_kr_take(s, &rec->base, "session", w.sid)) goto out;
  }
  eg_err e = eg_store_messages_scan(s->reader, s->tenant, w.sid, seq ? seq : 1, 0,
                                    eg_kr_message_visit, &w);
  if (e && !s->err) s->err = e;
  if (s->err) goto out;
  if (w.stopped) {
    s->stopped = 1;
    s->to.seq = w.next;
    s->to.session_id = (char *)w.sid;
    goto out;
  }
  s->to.seq = 0;
  s->to.session_id = "";
  stop = eg_kr_cursor(s, cur->buf, cur->len) != EG_OK;
out:
  engram__storage__v1__session_record__free_unpacked(rec, NULL);
  return stop;
}

static int eg_kr_memory_visit(void *arg, const eg_memory_pos *pos, const eg_memory_meta *meta,
                              const uint8_t *vec) {
  eg_kr_step *s = arg;
  eg_memory_rec *rec;
  const char *id;
  size_t id_len;
  int64_t create_us;
  (void)meta;
  (void)vec;
  if (s->walked >= s->budget) {
    s->stopped = 1;
    return 1;
  }
  eg_memory_pos_split(pos, &create_us, &id, &id_len);
  const char *mid = eg_kr_dup(s, id, id_len);
  if (!mid) return 1;
  eg_err e = eg_store_memory_get(s->reader, s->tenant, mid, &rec);
  if (e == EG_ENOTFOUND) return eg_kr_cursor(s, pos->buf, pos->len) != EG_OK;
  if (e) {
    s->err = e;
    return 1;
  }
  int stop = 1;
  if (eg_kr_push(s, EG_KR_MEMORY)) {
    s->recs[s->n - 1].id = mid;
    stop = eg_kr_take(s, &rec->base, "memory", mid) || eg_kr_cursor(s, pos->buf, pos->len);
  } else {
    s->err = EG_ENOMEM;
  }
  engram__storage__v1__memory_record__free_unpacked(rec, NULL);
  return stop;
}

/* A checkpoint with its pending writes: their record ids name the
 * checkpoint's ids, which only its record holds. */
static int eg_kr_ckpt_visit(void *arg, const eg_ckpt_pos *pos, eg_ckpt_rec *rec) {
  eg_kr_step *s = arg;
  eg_ckpt_write_rec **w = NULL;
  size_t n = 0;
  int stop = 1;
  if (s->walked >= s->budget) {
    s->stopped = 1;
    goto out;
  }
  const char *thread = eg_kr_dup(s, rec->thread_id, strlen(rec->thread_id));
  const char *ns = eg_kr_dup(s, rec->checkpoint_ns, strlen(rec->checkpoint_ns));
  const char *cid = eg_kr_dup(s, rec->checkpoint_id, strlen(rec->checkpoint_id));
  if (!thread || !ns || !cid) goto out;
  if (!eg_kr_push(s, EG_KR_CKPT)) {
    s->err = EG_ENOMEM;
    goto out;
  }
  s->recs[s->n - 1] = (eg_kr_rec){.kind = EG_KR_CKPT, .thread = thread, .ns = ns, .cid = cid};
  if (eg_kr_take(s, &rec->base, "checkpoint",
                 eg_ck_record_id(&s->r, s->user, thread, ns, cid, NULL, 0, 0)))
    goto out;
  eg_err e = eg_store_checkpoint_writes_get(s->reader, s->tenant, s->user, thread, ns, cid,
                                            EG_CKPT_PENDING_MAX, &w, &n);
  if (e) {
    s->err = e;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    const char *task = eg_kr_dup(s, w[i]->task_id, strlen(w[i]->task_id));
    if (!task || !eg_kr_push(s, EG_KR_CKPT_WRITE)) {
      s->err = EG_ENOMEM;
      goto out;
    }
    s->recs[s->n - 1] = (eg_kr_rec){.kind = EG_KR_CKPT_WRITE, .thread = thread, .ns = ns,
                                    .cid = cid, .task = task, .idx = w[i]->idx};
    if (eg_kr_take(s, &w[i]->base, "checkpoint",
                   eg_ck_record_id(&s->r, s->user, thread, ns, cid, task, w[i]->idx, 1)))
      goto out;
  }
  stop = eg_kr_cursor(s, pos->buf, pos->len) != EG_OK;
out:
  eg_ckpt_writes_free(w, n);
  eg_ckpt_rec_free(rec);
  return stop;
}

/* 1 if a[0..an) sorts after b[0..bn) (bytes, then length). */
static int eg_kr_after(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
  int c = an && bn ? memcmp(a, b, an < bn ? an : bn) : 0;
  return c > 0 || (c == 0 && an > bn);
}

/* The tenant's store items, resumed after the cursor (ns-enc | key: the
 * order of their keys) by scanning from the first. */
static int eg_kr_item_visit(void *arg, const eg_item_ref *ref, const eg_item_rec *rec) {
  eg_kr_step *s = arg;
  uint8_t at[EG_STORE_NS_ENC_MAX + EG_STORE_KEY_MAX];
  size_t kl = strlen(ref->key);
  if (ref->ns_len + kl > sizeof at) {
    s->err = EG_ECORRUPT;
    return 1;
  }
  memcpy(at, ref->ns, ref->ns_len);
  memcpy(at + ref->ns_len, ref->key, kl);
  if (!eg_kr_after(at, ref->ns_len + kl, s->from->cursor.data, s->from->cursor.len)) return 0;
  if (s->walked >= s->budget) {
    s->stopped = 1;
    return 1;
  }
  eg_kr_rec *r = eg_kr_push(s, EG_KR_ITEM);
  if (!r) {
    s->err = EG_ENOMEM;
    return 1;
  }
  memcpy(r->item_ns.buf, ref->ns, ref->ns_len);
  r->item_ns.len = ref->ns_len;
  if (!(r->id = eg_kr_dup(s, ref->key, kl))) return 1;
  return eg_kr_take(s, &rec->base, "store_item",
                    eg_item_record_id(&s->r, ref->ns, ref->ns_len, ref->key)) ||
         eg_kr_cursor(s, at, ref->ns_len + kl);
}

/* Walks the stage of the state from in a read txn. */
static eg_err eg_kr_walk(eg_kr_step *s) {
  const ProtobufCBinaryData *c = &s->from->cursor;
  eg_txn *t = s->reader;
  eg_err e = eg_store_reader_begin(t);
  if (e) return e;
  switch (s->from->stage) {
    case EG_KR_SESSIONS: {
      eg_session_cursor after = {.len = c->len};
      if (c->len > sizeof after.buf) e = EG_ECORRUPT;
      if (!e && c->len) memcpy(after.buf, c->data, c->len);
      if (!e)
        e = eg_store_sessions_scan(t, s->tenant, s->user, c->len ? &after : NULL,
                                   eg_kr_session_visit, s);
      break;
    }
    case EG_KR_MEMORIES: {
      eg_memory_pos after = {.len = c->len};
      if (c->len > sizeof after.buf) e = EG_ECORRUPT;
      if (!e && c->len) memcpy(after.buf, c->data, c->len);
      if (!e)
        e = eg_store_memories_scan(t, s->tenant, s->user, c->len ? &after : NULL, 0, 0,
                                   eg_kr_memory_visit, s);
      break;
    }
    case EG_KR_CHECKPOINTS: {
      eg_ckpt_pos after = {.len = c->len};
      if (c->len > sizeof after.buf) e = EG_ECORRUPT;
      if (!e && c->len) memcpy(after.buf, c->data, c->len);
      if (!e)
        e = eg_store_checkpoints_scan(t, s->tenant, s->user, NULL, NULL, NULL,
                                      c->len ? &after : NULL, eg_kr_ckpt_visit, s);
      break;
    }
    case EG_KR_ITEMS: {
      eg_store_ns all = {.len = 0};
      e = eg_store_items_scan(t, s->tenant, &all, SIZE_MAX, eg_kr_item_visit, s, NULL);
      break;
    }
    default:
      e = EG_ECORRUPT;
  }
  /* Ended before the write: a read txn held across it would keep the
   * writer from growing the map. */
  eg_store_reader_end(t);
  return e ? e : s->err;
}

/* ---- a step: the write ---------------------------------------------------------- */

/* Whether the stored row is still the one the walk began at: only this
 * thread moves a running rotation, but a replay or a second start may
 * have. Compared as packed (protobuf-c packs fields in one order). */
static int eg_kr_same_row(const eg_dk_rotation_rec *a, const eg_dk_rotation_rec *b) {
  size_t an = engram__storage__v1__data_key_rotation_record__get_packed_size(a);
  size_t bn = engram__storage__v1__data_key_rotation_record__get_packed_size(b);
  if (an != bn) return 0;
  uint8_t *pa = malloc(an ? an : 1), *pb = malloc(bn ? bn : 1);
  int same = pa && pb;
  if (same) {
    engram__storage__v1__data_key_rotation_record__pack(a, pa);
    engram__storage__v1__data_key_rotation_record__pack(b, pb);
    same = memcmp(pa, pb, an) == 0;
  }
  free(pa);
  free(pb);
  return same;
}

/* Reads the row in t: EG_EABORTED unless it is from. */
static eg_err eg_kr_check_row(eg_txn *t, const eg_dk_rotation_rec *from) {
  eg_dk_rotation_rec *cur;
  eg_err e = eg_store_dk_rotation_get(t, &cur);
  if (e) return e == EG_ENOTFOUND ? EG_EABORTED : e;
  e = eg_kr_same_row(cur, from) ? EG_OK : EG_EABORTED;
  eg_kr_row_free(cur);
  return e;
}

/* The stored record cur, its tokens still those r walked, as a copy in a
 * with the re-sealed tokens: NULL when they changed since (the next pass
 * reads it again). */
static ProtobufCMessage *eg_kr_next(eg_arena *a, const ProtobufCMessage *cur, const eg_kr_rec *r,
                                    eg_err *e) {
  const ProtobufCFieldDescriptor *f[EG_KR_TOKENS_MAX];
  size_t n = eg_token_fields(cur->descriptor, f);
  *e = EG_OK;
  if (n != r->n_tok) return NULL;
  for (size_t i = 0; i < n; i++) {
    const ProtobufCBinaryData *b = eg_token_at(cur, f[i]);
    if (b->len != r->old[i].len || (b->len && memcmp(b->data, r->old[i].data, b->len) != 0))
      return NULL;
  }
  ProtobufCMessage *next = eg_arena_alloc(a, cur->descriptor->sizeof_message);
  if (!next) {
    *e = EG_ENOMEM;
    return NULL;
  }
  memcpy(next, cur, cur->descriptor->sizeof_message);
  for (size_t i = 0; i < n; i++) *eg_token_at(next, f[i]) = r->neu[i];
  return next;
}

/* Puts r back with its re-sealed tokens, in t, if its tokens are still
 * the walked ones; a record deleted since is left alone. Every put keeps
 * what it derives from a record (indexes, meta, counts): tokens are part
 * of none. */
static eg_err eg_kr_put(const eg_kr_step *s, eg_txn *t, eg_arena *a, const eg_kr_rec *r) {
  ProtobufCMessage *cur = NULL, *next;
  eg_ckpt_write_rec **w = NULL;
  size_t n = 0;
  eg_err e;
  switch (r->kind) {
    case EG_KR_SESSION:
      e = eg_store_session_get(t, s->tenant, r->id, (eg_session_rec **)&cur);
      break;
    case EG_KR_MESSAGE:
      e = eg_store_message_get(t, s->tenant, r->id, r->seq, (eg_message_rec **)&cur);
      break;
    case EG_KR_MEMORY:
      e = eg_store_memory_get(t, s->tenant, r->id, (eg_memory_rec **)&cur);
      break;
    case EG_KR_CKPT:
      e = eg_store_checkpoint_get(t, s->tenant, s->user, r->thread, r->ns, r->cid,
                                  (eg_ckpt_rec **)&cur);
      break;
    case EG_KR_CKPT_WRITE:
      e = eg_store_checkpoint_writes_get(t, s->tenant, s->user, r->thread, r->ns, r->cid,
                                         EG_CKPT_PENDING_MAX, &w, &n);
      for (size_t i = 0; e == EG_OK && i < n && !cur; i++)
        if (w[i]->idx == r->idx && strcmp(w[i]->task_id, r->task) == 0) cur = &w[i]->base;
      if (e == EG_OK && !cur) e = EG_ENOTFOUND;
      break;
    default:
      e = eg_store_item_get(t, s->tenant, &r->item_ns, r->id, (eg_item_rec **)&cur);
  }
  if (e == EG_ENOTFOUND) e = EG_OK; /* gone since: nothing to re-seal */
  if (e || !cur || !(next = eg_kr_next(a, cur, r, &e))) goto out;
  switch (r->kind) {
    case EG_KR_SESSION:
      e = eg_store_session_put(t, s->tenant, (eg_session_rec *)next, (eg_session_rec *)cur);
      break;
    case EG_KR_MESSAGE:
      e = eg_store_message_reindex(t, s->tenant, r->id, (eg_message_rec *)cur,
                                   (eg_message_rec *)next);
      break;
    case EG_KR_MEMORY:
      e = eg_store_memory_put(t, s->tenant, (eg_memory_rec *)next, (eg_memory_rec *)cur, NULL);
      break;
    case EG_KR_CKPT:
      e = eg_store_checkpoint_put(t, s->tenant, s->user, (eg_ckpt_rec *)next);
      break;
    case EG_KR_CKPT_WRITE:
      e = eg_store_checkpoint_write_replace(t, s->tenant, s->user, r->thread, r->ns, r->cid,
                                            (eg_ckpt_write_rec *)next);
      break;
    default:
      e = eg_store_item_put(t, s->tenant, &r->item_ns, r->id, (eg_item_rec *)next,
                            (eg_item_rec *)cur);
  }
out:
  if (r->kind == EG_KR_CKPT_WRITE)
    eg_ckpt_writes_free(w, n);
  else if (r->kind == EG_KR_CKPT)
    eg_ckpt_rec_free((eg_ckpt_rec *)cur);
  else if (cur)
    protobuf_c_message_free_unpacked(cur, NULL);
  return e;
}

/* Errors by which a put refuses the record itself (as the reindex's):
 * a retry would meet them again. */
static int eg_kr_refusal(eg_err e) { return e == EG_EINVAL || e == EG_ECORRUPT; }

/* The step's write (eg_writer_run_alone: may run again after the map
 * grows, so it only reads s): each record in a sub txn (one the put
 * refuses is rolled back alone, left as it is and logged), then the
 * state. */
static eg_err eg_kr_step_write(void *arg, eg_txn *t) {
  const eg_kr_step *s = arg;
  eg_err e = eg_kr_check_row(t, s->from);
  eg_arena *a = eg_arena_new();
  if (!a) return EG_ENOMEM;
  for (size_t i = 0; i < s->n && !e; i++) {
    eg_txn *sub;
    if ((e = eg_store_sub_begin(t, &sub))) break;
    e = eg_kr_put(s, sub, a, &s->recs[i]);
    if (e == EG_OK) {
      e = eg_store_sub_commit(sub);
      continue;
    }
    eg_store_sub_abort(sub);
    if (!eg_kr_refusal(e)) break;
    eg_log(EG_LOG_WARN, "data-key rotation: a record of user \"%s\" of tenant %s was refused "
           "by its write (%s); left under its old key", s->user, s->tenant, eg_err_msg(e));
    e = EG_OK;
  }
  if (!e) e = eg_store_dk_rotation_put(t, &s->to);
  eg_arena_free(a);
  return e;
}

/* A write of the row alone: from as read, to as it becomes. */
typedef struct {
  const eg_dk_rotation_rec *from, *to;
} eg_kr_row_change;

static eg_err eg_kr_row_write(void *arg, eg_txn *t) {
  const eg_kr_row_change *c = arg;
  eg_err e = eg_kr_check_row(t, c->from);
  return e ? e : eg_store_dk_rotation_put(t, c->to);
}

eg_err eg_kr_change_row(eg_writer *writer, const eg_dk_rotation_rec *from,
                        const eg_dk_rotation_rec *to) {
  eg_kr_row_change c = {from, to};
  return eg_writer_run_alone(writer, eg_kr_row_write, &c, NULL);
}

/* ---- a user ------------------------------------------------------------------- */

static uint32_t eg_kr_first_stage(const char *user) {
  return user[0] ? EG_KR_SESSIONS : EG_KR_ITEMS;
}

/* The stage after st in a pass of user; EG_KR_DONE: the pass is over. */
static uint32_t eg_kr_next_stage(const char *user, uint32_t st) {
  return !user[0] || st + 1 >= EG_KR_ITEMS ? EG_KR_DONE : st + 1;
}

void eg_kr_pass_begin(eg_dk_rotation_rec *to, uint32_t pass) {
  if (pass <= 1) to->gen = 0; /* taken again by the pass's first step */
  to->pass = pass;
  to->stage = eg_kr_first_stage(to->user);
  to->cursor = (ProtobufCBinaryData){0, NULL};
  to->seq = 0;
  to->session_id = "";
  to->found = 0;
  to->pass_counts = NULL;
  to->n_pass_counts = 0;
  to->skipped = 0;
}

/* A copy of counts in a (eg_count_add then replaces its entries). */
static eg_err eg_counts_copy(eg_arena *a, eg_count_rec ***arr, size_t n) {
  eg_count_rec **c = n ? EG_ARENA_ARRAY(a, eg_count_rec *, n) : NULL;
  if (n && !c) return EG_ENOMEM;
  if (n) memcpy(c, *arr, n * sizeof *c);
  *arr = c;
  return EG_OK;
}

/* s->to, as the walk left it, made the state after the step: the
 * stage's next, the pass's next, or the user done (*user_done; not before
 * the second pass, server/key_rotation.h); as it is when the walk stopped
 * at the budget within the stage. */
static eg_err eg_kr_advance(eg_kr_step *s, const eg_dk_rotation_rec *row, int *user_done) {
  if (s->stopped) return EG_OK;
  uint32_t next = eg_kr_next_stage(s->user, row->stage);
  if (next != EG_KR_DONE) {
    s->to.stage = next;
    s->to.cursor = (ProtobufCBinaryData){0, NULL};
    s->to.seq = 0;
    s->to.session_id = "";
  } else if (row->pass >= 2 && s->to.found == 0) {
    s->to.stage = EG_KR_DONE;
    s->to.cursor = (ProtobufCBinaryData){0, NULL};
    s->to.done = row->done + 1;
    s->to.count_time_us = eg_now_us();
    eg_err e = eg_counts_copy(s->a, &s->to.counts, s->to.n_counts);
    if (!e)
      e = eg_counts_merge(s->a, &s->to.counts, &s->to.n_counts, s->to.pass_counts,
                          s->to.n_pass_counts);
    if (e) return e;
    *user_done = 1;
  } else {
    eg_kr_pass_begin(&s->to, row->pass + 1);
  }
  return EG_OK;
}

static const char *const eg_kr_kind_names[] = {"session", "message", "memory", "checkpoint",
                                               "checkpoint", "store item"};

/* At a budget of one record, the step's one record (a checkpoint: with its
 * pending writes) logs more than one commit may: it is left as it is and
 * the pass goes on past it (walked: s->to as the walk left it), its
 * tokens counted under their old keys, not found (the user's passes end),
 * skipped (its older generations are kept), the row's problem naming it. */
static eg_err eg_kr_skip(eg_kr_step *s, const eg_dk_rotation_rec *row,
                         const eg_dk_rotation_rec *walked, eg_writer *writer, int *user_done) {
  const eg_kr_rec *r = &s->recs[0]; /* the step kept it: it had tokens to re-seal */
  char what[400], problem[700];
  if (r->kind == EG_KR_MESSAGE)
    snprintf(what, sizeof what, "message %" PRIu64 " of session %s", r->seq, r->id);
  else if (r->kind == EG_KR_CKPT || r->kind == EG_KR_CKPT_WRITE)
    snprintf(what, sizeof what, "checkpoint %s of thread %s (with its pending writes)", r->cid,
             r->thread);
  else
    snprintf(what, sizeof what, "%s %s", eg_kr_kind_names[r->kind], r->id);
  snprintf(problem, sizeof problem, "user \"%s\" of tenant %s: %s is too large to re-seal in "
           "one write (more than %zu bytes of log): left under its old key, and the user's older "
           "data keys kept; delete or rewrite it, then rotate the user again",
           s->user, s->tenant, what, (size_t)EG_WRITER_ITEM_LOG_MAX);
  s->to = *walked;
  s->to.found = row->found;
  s->to.pass_counts = s->left_counts;
  s->to.n_pass_counts = s->n_left_counts;
  s->to.skipped = row->skipped + 1;
  if (!(s->to.problem = eg_arena_strndup(s->a, problem, strlen(problem)))) return EG_ENOMEM;
  s->n = 0;
  *user_done = 0;
  eg_err e = eg_kr_advance(s, row, user_done);
  if (!e) e = eg_writer_run_alone(writer, eg_kr_step_write, s, NULL);
  if (!e) eg_log(EG_LOG_WARN, "data-key rotation: %s", problem);
  return e;
}

eg_err eg_kr_step_run(eg_srv *srv, eg_writer *writer, eg_txn *reader,
                      const eg_dk_rotation_rec *row, size_t batch, size_t *walked,
                      int *user_done) {
  eg_kr_step s = {.reader = reader, .from = row, .to = *row, .budget = batch};
  char why[256];
  *walked = 0;
  *user_done = 0;
  if (!(s.a = eg_arena_new())) return EG_ENOMEM;
  s.tenant = row->tenant;
  s.user = row->user;
  s.r = (eg_req){.srv = srv, .tenant = row->tenant, .arena = s.a, .now_us = eg_now_us()};
  /* The key store's latest, never made (an erased user stays without a
   * key): EG_EERASED or EG_ENOTFOUND for the caller to skip the user. */
  eg_err e = eg_data_key_latest(srv->data_keys, s.tenant, s.user, &s.gen);
  if (!e && row->gen && row->gen != s.gen) {
    /* A rotation since pass 1 began: tokens this user's passes took as
     * current may be under row->gen, now old. Passes start again. */
    eg_kr_pass_begin(&s.to, 1);
    s.to.gen = s.gen;
    e = eg_kr_change_row(writer, row, &s.to);
    eg_arena_free(s.a);
    return e;
  }
  s.to.gen = s.gen;
  s.left_counts = row->pass_counts;
  s.n_left_counts = row->n_pass_counts;
  if (!e) e = eg_counts_copy(s.a, &s.to.pass_counts, s.to.n_pass_counts);
  if (!e) e = eg_counts_copy(s.a, &s.left_counts, s.n_left_counts);
  if (!e) {
    e = eg_data_key_get(srv->data_keys, eg_srv_keys(srv), s.tenant, s.user, s.gen, s.key, why,
                        sizeof why);
    if (e && e != EG_EERASED) eg_log(EG_LOG_ERROR, "data-key rotation: %s", why);
  }
  if (!e) e = eg_kr_walk(&s);
  eg_memzero(s.key, sizeof s.key);
  eg_dk_rotation_rec after_walk = s.to;
  if (!e) e = eg_kr_advance(&s, row, user_done);
  if (!e) e = eg_writer_run_alone(writer, eg_kr_step_write, &s, NULL);
  /* Smaller steps cannot help one record: the pass goes on without it. */
  if (e == EG_ELIMIT && batch == 1 && s.n) e = eg_kr_skip(&s, row, &after_walk, writer, user_done);
  if (!e) *walked = s.walked;
  eg_arena_free(s.a);
  return e;
}
