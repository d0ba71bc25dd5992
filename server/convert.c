#include "server/convert.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "engram/storage/v1/records.pb-c.h"
#include "engram/v1/memory.pb-c.h"
#include "server/data_keys.h"
#include "server/validate.h"

_Static_assert(offsetof(eg_kv_entry, key) == offsetof(Engram__V1__Session__MetadataEntry, key) &&
                   offsetof(eg_kv_entry, value) ==
                       offsetof(Engram__V1__Session__MetadataEntry, value) &&
                   offsetof(eg_kv_entry, key) == offsetof(Engram__V1__Message__MetadataEntry, key) &&
                   offsetof(eg_kv_entry, value) ==
                       offsetof(Engram__V1__Message__MetadataEntry, value) &&
                   offsetof(eg_kv_entry, key) == offsetof(Engram__V1__Memory__MetadataEntry, key) &&
                   offsetof(eg_kv_entry, value) ==
                       offsetof(Engram__V1__Memory__MetadataEntry, value),
               "map entries share one layout");

static eg_field_ctx eg_ctx(const eg_req *r, const char *kind, const char *record_id,
                           const char *field) {
  return (eg_field_ctx){.tenant = r->tenant, .kind = kind, .record_id = record_id, .field = field};
}

/* A write that would store tokens under a data key of user destroyed
 * since they were sealed (or, on the writer, finds no key to seal with):
 * an erasure (DeleteUser, DeleteTenant) or a rotation's retirement raced
 * it. Nothing is written; a retry seals again, under a live key. */
static eg_err key_gone(eg_req *r, const char *user, const char *kind, const char *record_id) {
  if (user[0])
    snprintf(r->msg, sizeof r->msg,
             "%s %s: the data keys of user \"%s\" were destroyed meanwhile (an erasure or a key "
             "rotation raced this write); nothing written, retry",
             kind, record_id, user);
  else
    snprintf(r->msg, sizeof r->msg,
             "%s %s: the tenant's data key was destroyed meanwhile (an erasure or a key rotation "
             "raced this write); nothing written, retry",
             kind, record_id);
  return EG_EABORTED;
}

/* Seals under (r's tenant, user)'s current data key, made if missing
 * (create: prepare) or only if it exists (the writer, where an erasure
 * may have raced: EG_EABORTED). */
static eg_err field_seal(eg_req *r, int create, const char *user, const char *kind,
                         const char *record_id, const char *field, const void *pt, size_t len,
                         ProtobufCBinaryData *out) {
  eg_field_ctx ctx = eg_ctx(r, kind, record_id, field);
  uint8_t *tok = eg_arena_alloc(r->arena, eg_token_len(len));
  if (!tok) return EG_ENOMEM;
  uint8_t key[EG_KEY_LEN];
  uint32_t gen;
  eg_err e = create ? eg_data_key_current(r->srv->data_keys, eg_srv_keys(r->srv), r->tenant, user,
                                          &gen, key)
                    : eg_data_key_current_existing(r->srv->data_keys, eg_srv_keys(r->srv),
                                                   r->tenant, user, &gen, key);
  if (e == EG_OK) e = eg_token_seal_dek(key, gen, &ctx, pt, len, tok);
  sodium_memzero(key, sizeof key);
  if (!create && (e == EG_EERASED || e == EG_ENOTFOUND)) return key_gone(r, user, kind, record_id);
  if (e != EG_OK) {
    snprintf(r->msg, sizeof r->msg, "%s %s: %s could not be sealed (%s)", kind, record_id, field,
             eg_err_msg(e));
    return e;
  }
  out->data = tok;
  out->len = eg_token_len(len);
  return EG_OK;
}

eg_err eg_field_seal(eg_req *r, const char *user, const char *kind, const char *record_id,
                     const char *field, const void *pt, size_t len, ProtobufCBinaryData *out) {
  return field_seal(r, 1, user, kind, record_id, field, pt, len, out);
}

eg_err eg_field_seal_existing(eg_req *r, const char *user, const char *kind,
                              const char *record_id, const char *field, const void *pt,
                              size_t len, ProtobufCBinaryData *out) {
  return field_seal(r, 0, user, kind, record_id, field, pt, len, out);
}

eg_err eg_field_sealed_live(eg_req *r, const char *user, const char *kind, const char *record_id,
                            const ProtobufCBinaryData *tok) {
  uint8_t version;
  uint32_t gen;
  /* Empty: nothing sealed. Format 1: under a master key, not a data key
   * (an erasure does not touch it). Malformed: not one eg_field_seal made. */
  if (tok->len == 0 || eg_token_version(tok->data, tok->len, &version) != EG_OK ||
      version == EG_TOKEN_VERSION || eg_token_generation(tok->data, tok->len, &gen) != EG_OK)
    return EG_OK;
  eg_err e = eg_data_key_live(r->srv->data_keys, r->tenant, user, gen);
  if (e == EG_EERASED || e == EG_ENOTFOUND) return key_gone(r, user, kind, record_id);
  if (e != EG_OK)
    snprintf(r->msg, sizeof r->msg, "%s %s: the key store could not be read (%s)", kind,
             record_id, eg_err_msg(e));
  return e;
}

eg_err eg_field_key_ready(eg_req *r, const char *user) {
  uint8_t key[EG_KEY_LEN];
  uint32_t gen;
  eg_err e =
      eg_data_key_current(r->srv->data_keys, eg_srv_keys(r->srv), r->tenant, user, &gen, key);
  sodium_memzero(key, sizeof key);
  return e;
}

/* Opens a format 2 token under user's data key of the generation it
 * names; why says what went wrong. */
static eg_err open_under_data_key(eg_req *r, const char *user, const eg_field_ctx *ctx,
                                  const ProtobufCBinaryData *tok, uint8_t *pt, size_t *plen,
                                  char *why, size_t whylen) {
  uint32_t gen;
  uint8_t key[EG_KEY_LEN];
  if (eg_token_generation(tok->data, tok->len, &gen) != EG_OK) return EG_ECORRUPT;
  eg_err e = eg_data_key_get(r->srv->data_keys, eg_srv_keys(r->srv), r->tenant, user, gen, key, why,
                             whylen);
  if (e == EG_OK) e = eg_token_open_dek(key, ctx, tok->data, tok->len, pt, plen);
  sodium_memzero(key, sizeof key);
  return e;
}

eg_err eg_field_open(eg_req *r, const char *user, const char *kind, const char *record_id,
                     const char *field, const ProtobufCBinaryData *tok, char **out, size_t *len) {
  char why[160] = "tampered, or key missing";
  if (tok->len == 0) {
    *out = "";
    *len = 0;
    return EG_OK;
  }
  uint8_t version;
  if (tok->len < EG_TOKEN_OVERHEAD || eg_token_version(tok->data, tok->len, &version) != EG_OK)
    goto corrupt;
  char *pt = eg_arena_alloc(r->arena, tok->len - EG_TOKEN_OVERHEAD + 1);
  if (!pt) return EG_ENOMEM;
  eg_field_ctx ctx = eg_ctx(r, kind, record_id, field);
  size_t plen;
  /* Format 1: sealed under a master key before envelope keys (a store of
   * an older release), opened as it always was. */
  eg_err e = version == EG_TOKEN_VERSION
                 ? eg_token_open(eg_srv_keys(r->srv), &ctx, tok->data, tok->len, (uint8_t *)pt,
                                 &plen)
                 : open_under_data_key(r, user, &ctx, tok, (uint8_t *)pt, &plen, why, sizeof why);
  /* Out of memory, or the key store failing to be read (too many readers,
   * an I/O error), is not tampered data: answered as itself, retryable
   * where it is. */
  if (e == EG_ENOMEM) return e;
  if (e != EG_OK && e != EG_ECORRUPT && e != EG_EERASED && e != EG_EINVAL) {
    snprintf(r->msg, sizeof r->msg, "%s %s: %s: %s", kind, record_id, field, why);
    return e;
  }
  if (e == EG_EERASED) {
    snprintf(r->msg, sizeof r->msg,
             "%s %s: %s cannot be read: the data of user \"%s\" was erased (its data key is "
             "destroyed)",
             kind, record_id, field, user);
    return e;
  }
  if (e != EG_OK) goto corrupt;
  pt[plen] = '\0';
  *out = pt;
  *len = plen;
  return EG_OK;
corrupt:
  snprintf(r->msg, sizeof r->msg, "%s %s: %s does not open (%s)", kind, record_id, field, why);
  return EG_ECORRUPT;
}

eg_err eg_metadata_pack(eg_req *r, const char *field, eg_kv_entry **entries, size_t n,
                        ProtobufCBinaryData *packed) {
  packed->data = NULL;
  packed->len = 0;
  if (n == 0) return EG_OK;
  /* The limit first, in one pass, before anything is built per entry. */
  int64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (!entries[i]->key[0])
      return eg_invalid(r->msg, sizeof r->msg, field, "keys must not be empty");
    total += (int64_t)strlen(entries[i]->key) + (int64_t)strlen(entries[i]->value);
  }
  if (total > r->srv->cfg->max_metadata_bytes)
    return eg_invalid(r->msg, sizeof r->msg, field, "%lld bytes of keys and values, limit %lld",
                      (long long)total, (long long)r->srv->cfg->max_metadata_bytes);
  Engram__Storage__V1__StringMap map = ENGRAM__STORAGE__V1__STRING_MAP__INIT;
  map.entries = EG_ARENA_ARRAY(r->arena, Engram__Storage__V1__StringMap__Entry *, n);
  Engram__Storage__V1__StringMap__Entry *ents =
      EG_ARENA_ARRAY(r->arena, Engram__Storage__V1__StringMap__Entry, n);
  if (!map.entries || !ents) return EG_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    engram__storage__v1__string_map__entry__init(&ents[i]);
    ents[i].key = entries[i]->key;
    ents[i].value = entries[i]->value;
    map.entries[i] = &ents[i];
  }
  map.n_entries = n;
  packed->len = engram__storage__v1__string_map__get_packed_size(&map);
  packed->data = eg_arena_alloc(r->arena, packed->len);
  if (!packed->data) return EG_ENOMEM;
  engram__storage__v1__string_map__pack(&map, packed->data);
  return EG_OK;
}

static void eg_string_map_free(void *p) {
  engram__storage__v1__string_map__free_unpacked(p, NULL);
}

eg_err eg_metadata_open(eg_req *r, const char *user, const char *kind, const char *record_id,
                        const ProtobufCBinaryData *tok, void (*init)(void *entry),
                        size_t entry_size, eg_kv_entry ***out, size_t *n) {
  char *pt;
  size_t len;
  *out = NULL;
  *n = 0;
  eg_err e = eg_field_open(r, user, kind, record_id, "metadata", tok, &pt, &len);
  if (e != EG_OK || len == 0) return e;
  Engram__Storage__V1__StringMap *map =
      engram__storage__v1__string_map__unpack(NULL, len, (const uint8_t *)pt);
  if (!map) {
    snprintf(r->msg, sizeof r->msg, "%s %s: metadata does not decode", kind, record_id);
    return EG_ECORRUPT;
  }
  if (eg_arena_defer(r->arena, eg_string_map_free, map) != 0) return EG_ENOMEM;
  eg_kv_entry **ents = EG_ARENA_ARRAY(r->arena, eg_kv_entry *, map->n_entries);
  if (!ents) return EG_ENOMEM;
  for (size_t i = 0; i < map->n_entries; i++) {
    ents[i] = eg_arena_alloc(r->arena, entry_size);
    if (!ents[i]) return EG_ENOMEM;
    init(ents[i]);
    ents[i]->key = map->entries[i]->key;
    ents[i]->value = map->entries[i]->value;
  }
  *out = ents;
  *n = map->n_entries;
  return EG_OK;
}

static void eg_session_entry_init(void *e) { engram__v1__session__metadata_entry__init(e); }
static void eg_message_entry_init(void *e) { engram__v1__message__metadata_entry__init(e); }

const char *eg_message_record_id(eg_req *r, const char *session_id, int64_t seq) {
  /* Made once per message a read opens: by hand, as snprintf's format
   * parsing was 4% of a GetContext. "-" and 19 digits at most. */
  char digits[20];
  size_t nd = 0, sl = strlen(session_id);
  uint64_t v = seq < 0 ? 0 - (uint64_t)seq : (uint64_t)seq;
  do {
    digits[nd++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  char *id = eg_arena_alloc(r->arena, sl + 2 + nd + 1);
  if (!id) return NULL;
  char *p = id;
  memcpy(p, session_id, sl);
  p += sl;
  *p++ = '/';
  if (seq < 0) *p++ = '-';
  while (nd) *p++ = digits[--nd];
  *p = '\0';
  return id;
}

const char *eg_ck_record_id(eg_req *r, const char *user, const char *thread, const char *ns,
                            const char *id, const char *task, int32_t idx, int with_task) {
  /* Five lengths of at most 20 digits and ':' each, idx's 11 characters. */
  size_t cap = strlen(user) + strlen(thread) + strlen(ns) + strlen(id) +
               (with_task ? strlen(task) : 0) + 5 * 21 + 11 + 1;
  char *s = eg_arena_alloc(r->arena, cap);
  if (!s) return NULL;
  int n = snprintf(s, cap, "%zu:%s%zu:%s%zu:%s%zu:%s", strlen(user), user, strlen(thread), thread,
                   strlen(ns), ns, strlen(id), id);
  if (with_task && n > 0 && (size_t)n < cap)
    snprintf(s + n, cap - (size_t)n, "%zu:%s%d", strlen(task), task, (int)idx);
  return s;
}

const char *eg_item_record_id(eg_req *r, const uint8_t *ns, size_t ns_len, const char *key) {
  static const char hex[] = "0123456789abcdef";
  size_t kl = strlen(key);
  char *id = eg_arena_alloc(r->arena, 2 * ns_len + 1 + kl + 1);
  if (!id) return NULL;
  for (size_t i = 0; i < ns_len; i++) {
    id[2 * i] = hex[ns[i] >> 4];
    id[2 * i + 1] = hex[ns[i] & 15];
  }
  id[2 * ns_len] = ':';
  memcpy(id + 2 * ns_len + 1, key, kl + 1);
  return id;
}

Google__Protobuf__Timestamp *eg_timestamp(eg_req *r, int64_t us) {
  Google__Protobuf__Timestamp *t = EG_ARENA_NEW(r->arena, Google__Protobuf__Timestamp);
  if (!t) return NULL;
  google__protobuf__timestamp__init(t);
  t->seconds = us / 1000000;
  t->nanos = (int32_t)(us % 1000000) * 1000;
  return t;
}

int eg_session_state_at(const eg_session_rec *rec, int64_t now_us) {
  if (rec->state == ENGRAM__V1__SESSION_STATE__SESSION_STATE_ACTIVE && rec->expire_time_us <= now_us)
    return ENGRAM__V1__SESSION_STATE__SESSION_STATE_EXPIRED;
  return rec->state;
}

/* The API view of a session's stats (all zero for a session stored
 * without them). */
static Engram__V1__SessionStats *eg_stats_to_api(eg_req *r, const eg_session_rec *rec) {
  static const Engram__Storage__V1__SessionStatsRecord none =
      ENGRAM__STORAGE__V1__SESSION_STATS_RECORD__INIT;
  const Engram__Storage__V1__SessionStatsRecord *st = rec->stats ? rec->stats : &none;
  Engram__V1__SessionStats *out = EG_ARENA_NEW(r->arena, Engram__V1__SessionStats);
  if (!out) return NULL;
  engram__v1__session_stats__init(out);
  out->user_messages = st->user_messages;
  out->assistant_messages = st->assistant_messages;
  out->system_messages = st->system_messages;
  out->tool_messages = st->tool_messages;
  out->total_tokens = st->total_tokens;
  if (st->first_message_time_us) {
    out->first_message_time = eg_timestamp(r, st->first_message_time_us);
    out->last_message_time = eg_timestamp(r, st->last_message_time_us);
    if (!out->first_message_time || !out->last_message_time) return NULL;
    out->duration_seconds = (double)(st->last_message_time_us - st->first_message_time_us) / 1e6;
  }
  if (rec->message_count > 0)
    out->summary_coverage = (double)rec->summary_through_seq / (double)rec->message_count;
  return out;
}

eg_err eg_session_to_api(eg_req *r, const eg_session_rec *rec, Engram__V1__Session **out) {
  Engram__V1__Session *s = EG_ARENA_NEW(r->arena, Engram__V1__Session);
  if (!s) return EG_ENOMEM;
  engram__v1__session__init(s);
  s->session_id = rec->session_id;
  s->user_id = rec->user_id;
  s->agent_id = rec->agent_id;
  s->state = eg_session_state_at(rec, r->now_us);
  s->create_time = eg_timestamp(r, rec->create_time_us);
  s->update_time = eg_timestamp(r, rec->update_time_us);
  s->expire_time = eg_timestamp(r, rec->expire_time_us);
  if (!s->create_time || !s->update_time || !s->expire_time) return EG_ENOMEM;
  s->message_count = rec->message_count;
  s->summary_through_seq = rec->summary_through_seq;
  s->summary_due = rec->message_count - rec->summary_through_seq >= r->srv->cfg->summary_every;
  s->ttl_seconds = rec->ttl_us / 1000000;
  s->forked_from_session_id = rec->forked_from_session_id;
  s->forked_through_seq = rec->forked_through_seq;
  s->exclude_from_search = rec->exclude_from_search;
  s->language = rec->language;
  if (rec->end_time_us && !(s->end_time = eg_timestamp(r, rec->end_time_us))) return EG_ENOMEM;
  if (!(s->stats = eg_stats_to_api(r, rec))) return EG_ENOMEM;
  size_t len;
  eg_err e = eg_field_open(r, rec->user_id, "session", rec->session_id, "summary",
                           &rec->summary_token, &s->summary, &len);
  if (e == EG_OK)
    e = eg_field_open(r, rec->user_id, "session", rec->session_id, "end_reason",
                      &rec->end_reason_token, &s->end_reason, &len);
  if (e != EG_OK) return e;
  e = eg_metadata_open(r, rec->user_id, "session", rec->session_id, &rec->metadata_token,
                       eg_session_entry_init, sizeof(Engram__V1__Session__MetadataEntry),
                       (eg_kv_entry ***)&s->metadata, &s->n_metadata);
  if (e != EG_OK) return e;
  *out = s;
  return EG_OK;
}

eg_err eg_message_to_api(eg_req *r, const char *user, const char *session_id,
                         const eg_message_rec *rec, Engram__V1__Message **out) {
  Engram__V1__Message *m = EG_ARENA_NEW(r->arena, Engram__V1__Message);
  const char *rid = eg_message_record_id(r, session_id, rec->seq);
  if (!m || !rid) return EG_ENOMEM;
  engram__v1__message__init(m);
  m->session_id = (char *)session_id;
  m->seq = rec->seq;
  m->role = rec->role;
  m->token_count = rec->token_count;
  m->client_message_id = rec->client_message_id;
  m->create_time = eg_timestamp(r, rec->create_time_us);
  if (!m->create_time) return EG_ENOMEM;
  size_t len;
  eg_err e =
      eg_field_open(r, user, "message", rid, "content", &rec->content_token, &m->content, &len);
  if (e != EG_OK) return e;
  e = eg_metadata_open(r, user, "message", rid, &rec->metadata_token, eg_message_entry_init,
                       sizeof(Engram__V1__Message__MetadataEntry), (eg_kv_entry ***)&m->metadata,
                       &m->n_metadata);
  if (e != EG_OK) return e;
  *out = m;
  return EG_OK;
}

/* ==== the reply byte budget ================================================ */

void eg_reply_budget_init(eg_reply_budget *b, const eg_req *r) {
  b->left = (size_t)(r->srv->cfg->max_reply_bytes - EG_REPLY_RESERVE);
  b->taken = 0;
}

/* Bytes of a varint holding v. */
static size_t eg_varint_len(size_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, n++;
  return n;
}

void eg_reply_budget_charge(eg_reply_budget *b, size_t len) {
  size_t n = 1 + eg_varint_len(len) + len;
  b->left -= n < b->left ? n : b->left;
  b->taken++;
}

int eg_reply_budget_take(eg_reply_budget *b, const ProtobufCMessage *item) {
  size_t len = protobuf_c_message_get_packed_size(item);
  size_t n = 1 + eg_varint_len(len) + len; /* every page field number is below 16 */
  if (n > b->left) {
    if (b->taken) return 0;
    n = b->left; /* the first item goes regardless */
  }
  b->left -= n;
  b->taken++;
  return 1;
}
