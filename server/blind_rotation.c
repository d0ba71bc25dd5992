/* The blind-index rotation's step and status (server/blind_rotation.h). */
#include "server/blind_rotation.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/blind_key.h"
#include "server/config.h"
#include "server/convert.h"
#include "server/data_keys.h"
#include "server/json_terms.h"
#include "server/memory_svc.h"
#include "server/message_terms.h"
#include "server/session_terms.h"
#include "server/store_svc.h"
#include "server/tokenizer.h"

static const char *const eg_br_kinds[EG_BLIND_KINDS] = {"memories", "messages", "sessions",
                                                        "checkpoints", "store items"};

/* Why a stuck record is stuck (the row's stuck_reasons bits), as the
 * problem says it. */
static const char *const eg_br_reasons[EG_BR_STUCK_REASONS] = {
    [EG_BR_STUCK_UNREADABLE] = "sealed fields that do not open (a master key missing from the "
                               "keyring, or tampered data)",
    [EG_BR_STUCK_NO_USER] = "checkpoints whose user holds no data key (written before envelope "
                            "keys: their key holds only a digest of the user)",
    [EG_BR_STUCK_REFUSED] = "records whose re-indexed copy is refused"};

/* The readable description of a stuck record kept in the row (and so in
 * the problem): kind, tenant, id, why. */
#define EG_BR_FIRST_MAX 400

/* The records a pass logs by name when stuck, and a step when left
 * uncounted (the rest are counted: a store holding thousands would log
 * a line each, pass after pass). */
#define EG_BR_STUCK_LOGGED 10

/* One record the walk converted: where it is, as walked, as it becomes. */
typedef struct {
  unsigned kind;
  uint8_t *key;
  size_t key_len;
  const char *tenant, *session_id, *item_key;
  const char *user; /* checkpoints: its user (eg_br_ckpt_user) */
  eg_store_ns ns;
  ProtobufCMessage *walked, *next;
} eg_br_rec;

typedef struct {
  eg_srv *srv;
  eg_arena *a;
  eg_txn *reader;
  const eg_blind_key_rec *from; /* the row as the walk began */
  eg_blind_keys keys;
  size_t budget;
  /* the tenant whose context under the target ctx is */
  const char *ctx_tenant;
  eg_blind_ctx *ctx;
  eg_br_rec *recs;
  size_t n;
  uint8_t *last; /* the last key walked: the cursor after the step */
  size_t last_len;
  uint64_t walked, found;
  /* The walk's stuck records (of found): how many, why, of which kinds,
   * the first (server/blind_rotation.h "Stuck records"). */
  uint64_t stuck, left; /* left: not counted (erased, or their session gone) */
  uint32_t stuck_reasons, stuck_kinds;
  char stuck_first[EG_BR_FIRST_MAX];
  int more;
  /* Set by the write (each run of it): whether it switched or paused. */
  int switched, paused;
  eg_err err;
} eg_br_step;

static void eg_br_msg_free(void *p) { protobuf_c_message_free_unpacked(p, NULL); }

static void eg_br_row_free(void *p) {
  engram__storage__v1__blind_index_key_record__free_unpacked(p, NULL);
}

eg_err eg_blind_rotation_running(eg_txn *t, int *running) {
  eg_blind_key_rec *rec;
  eg_err e = eg_store_blind_key_get(t, &rec);
  *running = 0;
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e) return e;
  *running = rec->target_key_id != 0 && !rec->paused;
  eg_br_row_free(rec);
  return EG_OK;
}

eg_err eg_blind_rotation_total(eg_txn *t, uint64_t *total) {
  *total = 0;
  for (unsigned k = 0; k < EG_BLIND_KINDS; k++) {
    uint64_t n;
    eg_err e = eg_store_blind_count(t, k, &n);
    if (e) return e;
    *total += n;
  }
  return EG_OK;
}

/* ---- the walk ------------------------------------------------------------- */

/* A request of the step's own for tenant, to open sealed fields as the
 * services do; rtxn the walk's, so that contexts it takes (eg_blind_ctx_of)
 * are under the row's write key: the target. */
static eg_req eg_br_req(eg_br_step *s, const char *tenant) {
  return (eg_req){.srv = s->srv, .tenant = tenant, .arena = s->a, .rtxn = s->reader,
                  .now_us = eg_now_us()};
}

/* The blind key id rec (of kind) is stamped with, and whether it holds
 * blind tokens at all (a record without any has nothing to convert). */
static uint32_t eg_br_stamp(unsigned kind, const ProtobufCMessage *m, int *tokens) {
  switch (kind) {
    case EG_BLIND_MEMORIES: {
      const eg_memory_rec *r = (const void *)m;
      *tokens = 1; /* its namespace token at least */
      return r->blind_key_id;
    }
    case EG_BLIND_MESSAGES: {
      const eg_message_rec *r = (const void *)m;
      *tokens = r->n_index_terms > 0;
      return r->blind_key_id;
    }
    case EG_BLIND_SESSIONS: {
      const eg_session_rec *r = (const void *)m;
      *tokens = r->n_metadata_hashes > 0;
      return r->blind_key_id;
    }
    case EG_BLIND_CHECKPOINTS: {
      const eg_ckpt_rec *r = (const void *)m;
      *tokens = r->n_metadata_hashes > 0;
      return r->blind_key_id;
    }
    default: {
      const eg_item_rec *r = (const void *)m;
      *tokens = r->n_value_hashes > 0;
      return r->blind_key_id;
    }
  }
}

/* A shallow copy of m in the step's arena (the converted record: its new
 * arrays are the arena's, the rest points into m). */
static ProtobufCMessage *eg_br_copy(eg_br_step *s, const ProtobufCMessage *m) {
  ProtobufCMessage *c = eg_arena_alloc(s->a, m->descriptor->sizeof_message);
  if (c) memcpy(c, m, m->descriptor->sizeof_message);
  return c;
}

struct eg_br_user_find {
  const eg_br_rec *x;
  eg_br_step *s;
};

static int eg_br_user_match(void *arg, const char *tenant, const char *user, uint32_t current,
                            uint32_t oldest) {
  struct eg_br_user_find *f = arg;
  eg_br_rec *x = (eg_br_rec *)f->x;
  (void)current;
  (void)oldest;
  if (strcmp(tenant, x->tenant) != 0 || !user[0] ||
      !eg_store_checkpoint_key_user(x->key, x->key_len, tenant, user))
    return 0;
  x->user = eg_arena_strndup(f->s->a, user, strlen(user));
  return 1;
}

/* A checkpoint's user (its key holds only a digest of it): the key
 * store's user of its tenant whose digest it is, erased users included
 * (every user who wrote a checkpoint since envelope keys holds a data
 * key, or held one until its erasure: a DeleteUser that did not finish
 * leaves its checkpoints, whose data-key fields then answer EG_EERASED
 * when opened, and whose format 1 fields still open and convert).
 * EG_EPRECOND when no user is (the walk cannot open it). Cost: the key
 * store's users, one hash each. */
static eg_err eg_br_ckpt_user(eg_br_step *s, eg_br_rec *x) {
  struct eg_br_user_find f = {.x = x, .s = s};
  int rc = eg_data_keys_each_known_user(s->srv->data_keys, eg_br_user_match, &f);
  if (rc < 0) return (eg_err)-rc;
  if (rc == 0) return EG_EPRECOND;
  return x->user ? EG_OK : EG_ENOMEM;
}

static void eg_session_entry_init(void *e) { engram__v1__session__metadata_entry__init(e); }

/* Every blind token of x->walked again under the target into x->next.
 * EG_ECORRUPT or EG_EERASED (r->msg saying which field) when a sealed
 * field does not open; EG_EPRECOND for a record the walk cannot convert
 * (a checkpoint, or a message whose session is gone). */
static eg_err eg_br_convert(eg_br_step *s, eg_req *r, eg_br_rec *x) {
  uint32_t target = s->keys.target;
  eg_err e;
  if (!(x->next = eg_br_copy(s, x->walked))) return EG_ENOMEM;
  switch (x->kind) {
    case EG_BLIND_MEMORIES: {
      eg_memory_rec *m = (eg_memory_rec *)x->next;
      if ((e = eg_memory_blind_rehash(r, s->ctx, m))) return e;
      m->blind_key_id = target;
      return EG_OK;
    }
    case EG_BLIND_MESSAGES: {
      eg_message_rec *m = (eg_message_rec *)x->next;
      eg_session_rec *ses;
      char *text;
      size_t len;
      e = eg_store_session_get(s->reader, x->tenant, x->session_id, &ses);
      if (e == EG_ENOTFOUND) return EG_EPRECOND;
      if (e) return e;
      if (eg_arena_defer(s->a, eg_br_msg_free, ses) != 0) {
        eg_br_msg_free(ses);
        return EG_ENOMEM;
      }
      const char *rid = eg_message_record_id(r, x->session_id, m->seq);
      if (!rid) return EG_ENOMEM;
      /* Terms at a version the tokenizer does not make (malformed: a
       * version is set with the terms) cannot be made again. */
      if (m->index_version < EG_TOKENIZER_V1 || m->index_version > EG_TOKENIZER_VERSION) {
        snprintf(r->msg, sizeof r->msg, "its index terms are at tokenizer version %u, which "
                 "this engramd does not make", (unsigned)m->index_version);
        return EG_EINVAL;
      }
      if ((e = eg_field_open(r, ses->user_id, "message", rid, "content", &m->content_token, &text,
                             &len)))
        return e;
      /* At its own tokenizer version: a rotation never runs alongside a
       * tokenizer reindex, which alone moves versions. */
      return eg_message_index_fields(s->a, s->ctx, target, m->index_version, ses->language,
                                     ses->user_id, text, len, m);
    }
    case EG_BLIND_SESSIONS: {
      eg_session_rec *m = (eg_session_rec *)x->next;
      eg_kv_entry **md;
      size_t n;
      if ((e = eg_metadata_open(r, m->user_id, "session", m->session_id, &m->metadata_token,
                                eg_session_entry_init, sizeof(Engram__V1__Session__MetadataEntry),
                                &md, &n)) ||
          (e = eg_session_terms(r, md, n, &m->metadata_hashes, &m->n_metadata_hashes)))
        return e;
      m->blind_key_id = r->blind_key_used;
      return EG_OK;
    }
    case EG_BLIND_ITEMS: {
      eg_item_rec *m = (eg_item_rec *)x->next;
      char *json;
      size_t len, n;
      const char *rid = eg_item_record_id(r, x->ns.buf, x->ns.len, x->item_key);
      uint64_t *h = EG_ARENA_ARRAY(s->a, uint64_t, EG_STORE_PAIRS_MAX);
      if (!rid || !h) return EG_ENOMEM;
      if ((e = eg_field_open(r, EG_DATA_KEY_TENANT_USER, "store_item", rid, "value",
                             &m->value_token, &json, &len)) ||
          (e = eg_json_terms(s->ctx, "value_json", json, len, h, EG_STORE_PAIRS_MAX, &n, r->msg,
                             sizeof r->msg)))
        return e;
      m->value_hashes = h;
      m->n_value_hashes = n;
      m->blind_key_id = target;
      return EG_OK;
    }
    case EG_BLIND_CHECKPOINTS: {
      eg_ckpt_rec *m = (eg_ckpt_rec *)x->next;
      char *json;
      size_t len, n;
      if ((e = eg_br_ckpt_user(s, x))) return e;
      const char *rid = eg_ck_record_id(r, x->user, m->thread_id, m->checkpoint_ns,
                                        m->checkpoint_id, NULL, 0, 0);
      uint64_t *h = EG_ARENA_ARRAY(s->a, uint64_t, EG_CKPT_JSON_PAIRS_MAX);
      if (!rid || !h) return EG_ENOMEM;
      if ((e = eg_field_open(r, x->user, "checkpoint", rid, "metadata", &m->metadata_token, &json,
                             &len)) ||
          (e = eg_json_terms(s->ctx, "checkpoint.metadata_json", json, len, h,
                             EG_CKPT_JSON_PAIRS_MAX, &n, r->msg, sizeof r->msg)))
        return e;
      m->metadata_hashes = h;
      m->n_metadata_hashes = n;
      m->blind_key_id = target;
      return EG_OK;
    }
    default:
      return EG_EINVAL;
  }
}

static uint8_t *eg_br_dup(eg_br_step *s, const void *p, size_t n) {
  uint8_t *d = eg_arena_alloc(s->a, n ? n : 1);
  if (d && n) memcpy(d, p, n);
  return d;
}

/* x described into buf: "memory M of tenant T: why" (ids as the API
 * names them; a store item's namespace labels joined with '/'). */
static void eg_br_describe(const eg_br_rec *x, const char *why, char *buf, size_t len) {
  int n;
  switch (x->kind) {
    case EG_BLIND_MEMORIES:
      n = snprintf(buf, len, "memory %s", ((const eg_memory_rec *)x->walked)->memory_id);
      break;
    case EG_BLIND_MESSAGES:
      n = snprintf(buf, len, "message %lld of session %s",
                   (long long)((const eg_message_rec *)x->walked)->seq, x->session_id);
      break;
    case EG_BLIND_SESSIONS:
      n = snprintf(buf, len, "session %s", ((const eg_session_rec *)x->walked)->session_id);
      break;
    case EG_BLIND_CHECKPOINTS: {
      const eg_ckpt_rec *c = (const void *)x->walked;
      n = snprintf(buf, len, "checkpoint %s of thread %s (namespace \"%s\")", c->checkpoint_id,
                   c->thread_id, c->checkpoint_ns);
      break;
    }
    default: {
      /* Its labels joined by '/' (an encoding that does not decode: ""). */
      char lb[EG_STORE_NS_ENC_MAX + 1], ns[EG_STORE_NS_ENC_MAX + 1] = "";
      char *labels[EG_STORE_NS_LABELS_MAX];
      int nl = eg_store_ns_decode(x->ns.buf, x->ns.len, lb, labels, EG_STORE_NS_LABELS_MAX);
      for (int i = 0, o = 0; i < nl && o >= 0 && (size_t)o < sizeof ns; i++)
        o += snprintf(ns + o, sizeof ns - (size_t)o, "%s%s", i ? "/" : "", labels[i]);
      n = snprintf(buf, len, "store item %s in namespace %s", x->item_key, ns);
    }
  }
  if (n >= 0 && (size_t)n < len)
    snprintf(buf + n, len - (size_t)n, " of tenant %s: %s", x->tenant, why);
}

/* Counts x stuck for reason (found already), kept as the step's first
 * when it is; logs it. */
static void eg_br_stuck(eg_br_step *s, const eg_br_rec *x, unsigned reason, const char *why) {
  char d[EG_BR_FIRST_MAX];
  eg_br_describe(x, why, d, sizeof d);
  s->stuck++;
  s->stuck_reasons |= 1u << reason;
  s->stuck_kinds |= 1u << x->kind;
  if (!s->stuck_first[0]) memcpy(s->stuck_first, d, sizeof d);
  uint64_t nth = s->from->pass_stuck + s->stuck;
  if (nth <= EG_BR_STUCK_LOGGED)
    eg_log(EG_LOG_WARN, "blind-index rotation: cannot re-index %s; left under its key%s", d,
           nth == EG_BR_STUCK_LOGGED ? " (further stuck records of this pass are counted, "
                                       "not logged)" : "");
}

static int eg_br_visit(void *arg, const eg_blind_ref *ref, ProtobufCMessage *m) {
  eg_br_step *s = arg;
  int tokens;
  if (eg_arena_defer(s->a, eg_br_msg_free, m) != 0) {
    eg_br_msg_free(m);
    return s->err = EG_ENOMEM, 1;
  }
  if (!(s->last = eg_br_dup(s, ref->key, ref->key_len))) return s->err = EG_ENOMEM, 1;
  s->last_len = ref->key_len;
  s->walked++;
  uint32_t stamp = eg_br_stamp(s->from->kind, m, &tokens);
  if (!tokens || eg_blind_keys_rec(&s->keys, stamp) == s->keys.target) return 0;
  eg_br_rec *x = &s->recs[s->n];
  *x = (eg_br_rec){.kind = s->from->kind, .key = s->last, .key_len = ref->key_len, .walked = m};
  if (!(x->tenant = (char *)eg_br_dup(s, ref->tenant, strlen(ref->tenant) + 1)) ||
      (ref->session_id &&
       !(x->session_id = (char *)eg_br_dup(s, ref->session_id, strlen(ref->session_id) + 1))) ||
      (ref->item_key &&
       !(x->item_key = (char *)eg_br_dup(s, ref->item_key, strlen(ref->item_key) + 1))))
    return s->err = EG_ENOMEM, 1;
  if (ref->ns_len) {
    memcpy(x->ns.buf, ref->ns, ref->ns_len);
    x->ns.len = ref->ns_len;
  }
  eg_req r = eg_br_req(s, x->tenant);
  if (!s->ctx_tenant || strcmp(s->ctx_tenant, x->tenant) != 0) {
    if ((s->err = eg_blind_ctx_under(&r, s->keys.target, &s->ctx))) return 1;
    s->ctx_tenant = x->tenant;
  }
  eg_err e = eg_br_convert(s, &r, x);
  if (e == EG_OK) {
    s->found++;
    s->n++;
  } else if (e == EG_ECORRUPT || e == EG_EINVAL ||
             (e == EG_EPRECOND && x->kind == EG_BLIND_CHECKPOINTS)) {
    /* Stuck, and counted found: the switch waits for it (unreadable now
     * need not be for good: read again once its key is back, it is found
     * only under a key queries read). server/blind_rotation.h "Stuck
     * records". */
    s->found++;
    eg_br_stuck(s, x,
                e == EG_ECORRUPT   ? EG_BR_STUCK_UNREADABLE
                : e == EG_EPRECOND ? EG_BR_STUCK_NO_USER
                                   : EG_BR_STUCK_REFUSED,
                e == EG_EPRECOND ? "its user holds no data key"
                : r.msg[0]       ? r.msg
                                 : eg_err_msg(e));
  } else if (e == EG_EPRECOND || e == EG_EERASED) {
    /* Not counted: matched by no query, now or later. Its session is gone
     * (the message is swept with it), or its user was erased (its data
     * keys destroyed: its fields never open again, under any key). */
    if (++s->left <= EG_BR_STUCK_LOGGED)
      eg_log(EG_LOG_WARN, "blind-index rotation: a record of %s of tenant %s left under key %u "
             "(%s)%s", eg_br_kinds[x->kind], x->tenant,
             (unsigned)eg_blind_keys_rec(&s->keys, stamp),
             e == EG_EPRECOND ? "its session is gone" : r.msg,
             s->left == EG_BR_STUCK_LOGGED ? "; further ones of this step are counted, not logged"
                                           : "");
  } else {
    return s->err = e, 1;
  }
  return 0;
}

static eg_err eg_br_walk(eg_br_step *s) {
  eg_err e = eg_store_reader_begin(s->reader);
  if (e) return e;
  e = eg_store_blind_walk(s->reader, s->from->kind, s->from->cursor.data, s->from->cursor.len,
                          s->budget, eg_br_visit, s, &s->more);
  /* Ended before the write: a read txn held across it would keep the
   * writer from growing the map. */
  eg_store_reader_end(s->reader);
  return e ? e : s->err;
}

/* ---- the write --------------------------------------------------------------- */

static int eg_br_same_msg(const ProtobufCMessage *a, const ProtobufCMessage *b) {
  size_t an = protobuf_c_message_get_packed_size(a), bn = protobuf_c_message_get_packed_size(b);
  if (an != bn) return 0;
  uint8_t *pa = malloc(an ? an : 1), *pb = malloc(bn ? bn : 1);
  int same = pa && pb;
  if (same) {
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    same = memcmp(pa, pb, an) == 0;
  }
  free(pa);
  free(pb);
  return same;
}

/* Puts x's converted copy in t if the stored record is still as walked;
 * *changed when it is not (or is gone: then nothing to convert). */
static eg_err eg_br_put(eg_txn *t, const eg_br_rec *x, int *changed) {
  ProtobufCMessage *cur;
  *changed = 0;
  eg_err e = eg_store_blind_get(t, x->kind, x->key, x->key_len, &cur);
  if (e == EG_ENOTFOUND) return EG_OK;
  if (e) return e;
  if (!eg_br_same_msg(cur, x->walked)) {
    *changed = 1;
  } else {
    switch (x->kind) {
      case EG_BLIND_MEMORIES:
        e = eg_store_memory_put(t, x->tenant, (eg_memory_rec *)x->next, (eg_memory_rec *)cur,
                                NULL);
        break;
      case EG_BLIND_MESSAGES:
        e = eg_store_message_reindex(t, x->tenant, x->session_id, (eg_message_rec *)cur,
                                     (eg_message_rec *)x->next);
        break;
      case EG_BLIND_SESSIONS:
        e = eg_store_session_put(t, x->tenant, (eg_session_rec *)x->next, (eg_session_rec *)cur);
        break;
      case EG_BLIND_CHECKPOINTS:
        e = eg_store_checkpoint_put(t, x->tenant, x->user, (eg_ckpt_rec *)x->next);
        break;
      default:
        e = eg_store_item_put(t, x->tenant, &x->ns, x->item_key, (eg_item_rec *)x->next,
                              (eg_item_rec *)cur);
    }
  }
  protobuf_c_message_free_unpacked(cur, NULL);
  return e;
}

/* The problem of a rotation paused by row `to` (its pass's stuck
 * counts) into buf. */
static void eg_br_problem(const eg_blind_key_rec *to, char *buf, size_t len) {
  char kinds[80] = "", why[400] = "";
  size_t k = 0, w = 0;
  for (unsigned i = 0; i < EG_BLIND_KINDS; i++)
    if (to->stuck_kinds & (1u << i) && k < sizeof kinds)
      k += (size_t)snprintf(kinds + k, sizeof kinds - k, "%s%s", k ? ", " : "", eg_br_kinds[i]);
  for (unsigned i = 0; i < EG_BR_STUCK_REASONS; i++)
    if (to->stuck_reasons & (1u << i) && w < sizeof why)
      w += (size_t)snprintf(why + w, sizeof why - w, "%s%s", w ? "; " : "", eg_br_reasons[i]);
  snprintf(buf, len, "paused: %llu records (%s) cannot be re-indexed under key %u: %s. The "
           "first: %s. Searches read both keys meanwhile (nothing is lost or hidden). Restore "
           "the missing master key to the keyring (SIGHUP), or rewrite or delete those records, "
           "then run engram admin keys rotate-blind again to resume",
           (unsigned long long)to->pass_stuck, kinds, (unsigned)to->target_key_id, why,
           to->stuck_first);
}

/* The write (eg_writer_run_alone: may run again after the map grows, so
 * it changes nothing in s but switched and paused): the row still the
 * walked one, each record in a sub txn (one its put refuses is rolled
 * back alone and stays found, stuck), then the row after the step, the
 * next pass, the pause or the switch. */
static eg_err eg_br_write(void *arg, eg_txn *t) {
  eg_br_step *s = arg;
  eg_blind_key_rec *cur, to;
  uint64_t found = s->found, refused = 0;
  uint32_t refused_kinds = 0;
  char first[EG_BR_FIRST_MAX] = "", problem[EG_BR_FIRST_MAX + 1024];
  s->switched = s->paused = 0;
  eg_err e = eg_store_blind_key_get(t, &cur);
  if (e) return e == EG_ENOTFOUND ? EG_EABORTED : e;
  int same = eg_br_same_msg(&cur->base, &s->from->base);
  eg_br_row_free(cur);
  if (!same) return EG_EABORTED;
  for (size_t i = 0; i < s->n; i++) {
    eg_txn *sub;
    int changed;
    if ((e = eg_store_sub_begin(t, &sub))) return e;
    e = eg_br_put(sub, &s->recs[i], &changed);
    if (e == EG_OK) {
      if ((e = eg_store_sub_commit(sub))) return e;
      continue;
    }
    eg_store_sub_abort(sub);
    if (e != EG_EINVAL && e != EG_ECORRUPT) return e;
    /* Stays found, stuck: the switch waits for it. */
    char d[EG_BR_FIRST_MAX];
    eg_br_describe(&s->recs[i], eg_err_msg(e), d, sizeof d);
    if (!refused++) memcpy(first, d, sizeof first);
    if (s->from->pass_stuck + s->stuck + refused <= EG_BR_STUCK_LOGGED)
      eg_log(EG_LOG_WARN, "blind-index rotation: the write refused %s; left under its key", d);
    refused_kinds |= 1u << s->recs[i].kind;
  }
  to = *s->from;
  to.done = s->from->done + s->walked;
  /* Counted afresh each step (one mdb_stat per kind): the walk also meets
   * records written since the pass began. */
  if ((e = eg_blind_rotation_total(t, &to.total))) return e;
  to.pass_found = s->from->pass_found + found;
  to.pass_stuck = s->from->pass_stuck + s->stuck + refused;
  to.stuck_reasons =
      s->from->stuck_reasons | s->stuck_reasons | (refused ? 1u << EG_BR_STUCK_REFUSED : 0);
  to.stuck_kinds = s->from->stuck_kinds | s->stuck_kinds | refused_kinds;
  /* The pass's first: the walk's met before the write's. */
  to.stuck_first = s->from->stuck_first[0] ? s->from->stuck_first
                   : s->stuck_first[0]     ? s->stuck_first
                                           : first;
  /* Said only by the pause (a row of an older engramd may say something
   * else while it runs). */
  to.problem = "";
  if (s->more) {
    to.cursor = (ProtobufCBinaryData){s->last_len, s->last};
  } else if (s->from->kind + 1 < EG_BLIND_KINDS) {
    to.kind = s->from->kind + 1;
    to.cursor = (ProtobufCBinaryData){0, NULL};
  } else if (to.pass_found > to.pass_stuck) {
    /* Another pass: every record of every kind walked again (this one
     * converted some, or met some changed since its walk). */
    eg_blind_rotation_pass_begin(&to, s->from->pass + 1);
  } else if (to.pass_found) {
    /* Every record found is stuck: another pass would only find them
     * again, holding off tokenizer reindexes for nothing. The pass's
     * counts stay for the status. */
    to.paused = 1;
    to.kind = 0;
    to.cursor = (ProtobufCBinaryData){0, NULL};
    eg_br_problem(&to, problem, sizeof problem);
    to.problem = problem;
    s->paused = 1;
  } else {
    /* A whole pass found every record under the target: the switch. */
    to.key_id = s->from->target_key_id;
    to.target_key_id = 0;
    to.kind = 0;
    to.cursor = (ProtobufCBinaryData){0, NULL};
    to.pass = 0;
    to.finish_time_us = eg_now_us();
    s->switched = 1;
  }
  return eg_store_blind_key_put(t, &to);
}

void eg_blind_rotation_pass_begin(eg_blind_key_rec *row, uint32_t pass) {
  row->kind = 0;
  row->cursor = (ProtobufCBinaryData){0, NULL};
  row->pass = pass;
  row->done = row->pass_found = row->pass_stuck = 0;
  row->stuck_reasons = row->stuck_kinds = 0;
  row->stuck_first = "";
  row->paused = 0;
  row->problem = "";
}

eg_err eg_blind_rotation_step(eg_srv *srv, eg_writer *writer, eg_txn *reader, size_t batch,
                              uint64_t *walked) {
  eg_br_step s = {.srv = srv, .reader = reader, .budget = batch};
  eg_blind_key_rec *row = NULL;
  *walked = 0;
  if (!(s.a = eg_arena_new())) return EG_ENOMEM;
  eg_err e = eg_store_reader_begin(reader);
  if (e == EG_OK) {
    e = eg_store_blind_key_get(reader, &row);
    if (e == EG_OK) e = eg_blind_keys_get(reader, eg_srv_keys(srv), &s.keys);
    eg_store_reader_end(reader);
  }
  if (e == EG_OK && eg_arena_defer(s.a, eg_br_row_free, row) != 0) {
    eg_br_row_free(row);
    e = EG_ENOMEM;
  }
  if (e == EG_OK && (!row->target_key_id || row->paused || row->kind >= EG_BLIND_KINDS))
    e = EG_ENOTFOUND;
  if (e) {
    eg_arena_free(s.a);
    return e;
  }
  s.from = row;
  if (!(s.recs = EG_ARENA_ARRAY(s.a, eg_br_rec, batch))) e = EG_ENOMEM;
  if (!e) e = eg_br_walk(&s);
  if (!e) e = eg_writer_run_alone(writer, eg_br_write, &s, NULL);
  if (!e) {
    *walked = s.walked;
    if (s.left > EG_BR_STUCK_LOGGED)
      eg_log(EG_LOG_WARN, "blind-index rotation: %" PRIu64 " records of this step left under "
             "their key (erased users', or their session gone)", s.left);
    if (s.switched) {
      eg_log(EG_LOG_INFO, "blind-index rotation done: every blind token under key %u (was %u); "
             "searches read only key %u", (unsigned)row->target_key_id, (unsigned)row->key_id,
             (unsigned)row->target_key_id);
    } else if (s.paused) {
      eg_log(EG_LOG_WARN, "blind-index rotation to key %u paused: every record its pass found "
             "under another key is stuck (engram admin keys status says which and what to do)",
             (unsigned)row->target_key_id);
    } else if (!s.more && row->kind + 1 == EG_BLIND_KINDS) {
      eg_log(EG_LOG_INFO, "blind-index rotation to key %u: pass %u found %" PRIu64
             " records under another key; walking again", (unsigned)row->target_key_id,
             (unsigned)row->pass, row->pass_found + s.found);
    }
  }
  eg_arena_free(s.a);
  return e;
}

/* ---- status -------------------------------------------------------------------- */

eg_err eg_blind_rotation_api(eg_req *r, const eg_blind_key_rec *rec,
                             Engram__V1__KeyRotationStatus **out) {
  Engram__V1__KeyRotationStatus *st = EG_ARENA_NEW(r->arena, Engram__V1__KeyRotationStatus);
  if (!st) return EG_ENOMEM;
  engram__v1__key_rotation_status__init(st);
  st->kind = "blind_index";
  st->scope = "";
  st->running = rec->target_key_id != 0 && !rec->paused;
  st->paused = rec->target_key_id != 0 && rec->paused;
  st->done = rec->done;
  st->total = rec->total;
  st->problem = rec->problem;
  if ((rec->start_time_us && !(st->start_time = eg_timestamp(r, rec->start_time_us))) ||
      (rec->finish_time_us && !(st->finish_time = eg_timestamp(r, rec->finish_time_us))))
    return EG_ENOMEM;
  *out = st;
  return EG_OK;
}
