/*
 * Memory fields the filters read (memory_svc.h, "memory_fields.c"):
 * metadata (a sealed StringMap and a blind token per key=value pair, the
 * pair hashing of session metadata), namespace (a checked path and a
 * blind token per path prefix), language, and the blind tokens of
 * agent_id and source_session_id. The tokens go into the record, and the
 * store copies them into the meta value (storage/memories.h, layout 3),
 * so that List and Search filter without decoding records.
 */
#include <stdio.h>
#include <string.h>

#include "server/convert.h"
#include "server/memory_svc.h"
#include "server/session_terms.h"
#include "server/tokenizer.h"
#include "server/validate.h"

_Static_assert(EG_MEMORY_MD_HASHES_MAX <= EG_SESSION_TERMS_MAX,
               "eg_session_terms indexes every pair of a memory's metadata");
_Static_assert(EG_NAMESPACE_MAX <= EG_LABEL_HASH_MAX && EG_ID_MAX <= EG_LABEL_HASH_MAX,
               "eg_label_hash takes a namespace and an id");

uint64_t eg_label_hash(const eg_blind_ctx *ctx, char domain, const char *s, size_t n) {
  char buf[1 + EG_LABEL_HASH_MAX];
  if (n > EG_LABEL_HASH_MAX) n = EG_LABEL_HASH_MAX; /* callers check their lengths first */
  buf[0] = domain;
  memcpy(buf + 1, s, n);
  return eg_blind_word(ctx, buf, n + 1);
}

/* Domain bytes of eg_label_hash (category 'c' and tag 't' are
 * svc_memory.c's): each kind of token differs from the others even for
 * equal strings. */
#define EG_DOMAIN_AGENT 'a'
#define EG_DOMAIN_SOURCE 'o'
#define EG_DOMAIN_NAMESPACE 'n'

uint64_t eg_agent_hash(const eg_blind_ctx *ctx, const char *agent_id) {
  return agent_id[0] ? eg_label_hash(ctx, EG_DOMAIN_AGENT, agent_id, strlen(agent_id)) : 0;
}

uint64_t eg_source_hash(const eg_blind_ctx *ctx, const char *session_id) {
  return session_id[0] ? eg_label_hash(ctx, EG_DOMAIN_SOURCE, session_id, strlen(session_id)) : 0;
}

uint64_t eg_namespace_hash(const eg_blind_ctx *ctx, const char *ns, size_t len) {
  return eg_label_hash(ctx, EG_DOMAIN_NAMESPACE, ns, len);
}

static int eg_ns_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

eg_err eg_namespace_check(eg_req *r, const char *field, const char *ns) {
  size_t len = strlen(ns), labels = 0, label = 0, dots = 0;
  if (len == 0) return EG_OK;
  if (len > EG_NAMESPACE_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu bytes, limit %d", len, EG_NAMESPACE_MAX);
  for (size_t i = 0; i <= len; i++) {
    if (i < len && ns[i] != '/') {
      if (!eg_ns_char(ns[i]))
        return eg_invalid(r->msg, sizeof r->msg, field,
                          "byte %zu: labels hold only [A-Za-z0-9_.-], joined by '/'", i);
      dots += ns[i] == '.';
      if (++label > EG_NAMESPACE_LABEL_MAX)
        return eg_invalid(r->msg, sizeof r->msg, field, "label %zu: longer than %d bytes",
                          labels + 1, EG_NAMESPACE_LABEL_MAX);
      continue;
    }
    if (label == 0)
      return eg_invalid(r->msg, sizeof r->msg, field, "label %zu is empty (no leading, trailing "
                        "or doubled '/')", labels + 1);
    /* "." and "..": clients that map namespaces onto paths must not meet
     * them. */
    if (dots == label)
      return eg_invalid(r->msg, sizeof r->msg, field, "label %zu is only dots", labels + 1);
    if (++labels > EG_MEMORY_NS_HASHES_MAX)
      return eg_invalid(r->msg, sizeof r->msg, field, "more than %d labels", EG_MEMORY_NS_HASHES_MAX);
    label = 0;
    dots = 0;
  }
  return EG_OK;
}

eg_err eg_language_check(eg_req *r, const char *field, const char *lang) {
  if (eg_lang_check(lang) != 0)
    return eg_invalid(r->msg, sizeof r->msg, field,
                      "not a BCP 47 tag ('en', 'de', 'zh-Hant'; at most %d bytes)", EG_LANG_MAX);
  return EG_OK;
}

eg_err eg_memory_namespace_set(eg_req *r, const eg_blind_ctx *ctx, const char *ns,
                               eg_memory_rec *rec) {
  uint64_t *h = EG_ARENA_ARRAY(r->arena, uint64_t, EG_MEMORY_NS_HASHES_MAX);
  size_t n = 0, len = strlen(ns);
  if (!h) return EG_ENOMEM;
  /* One token per prefix ending at a label: "a/b" -> "a", "a/b". The
   * caller checked ns (at most EG_MEMORY_NS_HASHES_MAX labels). */
  for (size_t i = 1; i <= len && n < EG_MEMORY_NS_HASHES_MAX; i++)
    if (i == len || ns[i] == '/') h[n++] = eg_namespace_hash(ctx, ns, i);
  rec->namespace_ = (char *)ns;
  rec->namespace_hashes = h;
  rec->n_namespace_hashes = n;
  return EG_OK;
}

void eg_memory_ids_hash(const eg_blind_ctx *ctx, eg_memory_rec *rec) {
  rec->agent_hash = eg_agent_hash(ctx, rec->agent_id);
  rec->source_hash = eg_source_hash(ctx, rec->source_session_id);
}

eg_err eg_memory_metadata_seal(eg_req *r, const char *field, const char *user,
                               const char *memory_id, Engram__V1__Memory__MetadataEntry **md,
                               size_t n, eg_memory_rec *rec) {
  ProtobufCBinaryData packed;
  eg_kv_entry **ents = (eg_kv_entry **)md;
  eg_err e;
  rec->metadata_token = (ProtobufCBinaryData){0};
  rec->metadata_hashes = NULL;
  rec->n_metadata_hashes = 0;
  if (n > EG_MEMORY_MD_HASHES_MAX)
    return eg_invalid(r->msg, sizeof r->msg, field, "%zu entries, limit %d", n, EG_MEMORY_MD_HASHES_MAX);
  if ((e = eg_metadata_pack(r, field, ents, n, &packed))) return e;
  if (packed.len &&
      (e = eg_field_seal(r, user, "memory", memory_id, "metadata", packed.data, packed.len,
                         &rec->metadata_token)))
    return e;
  return eg_session_terms(r, ents, n, &rec->metadata_hashes, &rec->n_metadata_hashes);
}

static void eg_memory_md_entry_init(void *e) { engram__v1__memory__metadata_entry__init(e); }

eg_err eg_memory_metadata_open(eg_req *r, const eg_memory_rec *rec, Engram__V1__Memory *m) {
  return eg_metadata_open(r, rec->user_id, "memory", rec->memory_id, &rec->metadata_token,
                          eg_memory_md_entry_init,
                          sizeof(Engram__V1__Memory__MetadataEntry), (eg_kv_entry ***)&m->metadata,
                          &m->n_metadata);
}
