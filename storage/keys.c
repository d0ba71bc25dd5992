#include "storage/keys.h"

#include <string.h>

#include "storage/storage.h"

eg_err eg_key_raw(eg_key *k, const void *p, size_t n) {
  if (n > EG_KEY_MAX - k->len) return EG_EINVAL;
  if (n) memcpy(k->buf + k->len, p, n);
  k->len += n;
  return EG_OK;
}

/* Length of a valid id, or 0 for NULL, empty or too long ones. */
static size_t eg_key_id_len(const char *id) {
  if (!id) return 0;
  size_t n = strnlen(id, EG_STORE_ID_MAX + 1);
  return n <= EG_STORE_ID_MAX ? n : 0;
}

eg_err eg_key_id(eg_key *k, const char *id) {
  size_t n = eg_key_id_len(id);
  if (!n) return EG_EINVAL;
  uint8_t len = (uint8_t)n;
  eg_err e = eg_key_raw(k, &len, 1);
  return e ? e : eg_key_raw(k, id, n);
}

eg_err eg_key_tail(eg_key *k, const char *id) {
  size_t n = eg_key_id_len(id);
  return n ? eg_key_raw(k, id, n) : EG_EINVAL;
}

eg_err eg_key_u64(eg_key *k, uint64_t v) {
  uint8_t b[8];
  eg_be64_put(b, v);
  return eg_key_raw(k, b, sizeof b);
}

void eg_be64_put(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

uint64_t eg_be64_get(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

void eg_be32_put(uint8_t *p, uint32_t v) {
  for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

uint32_t eg_be32_get(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v = v << 8 | p[i];
  return v;
}

int eg_key_has_prefix(const void *p, size_t n, const eg_key *prefix) {
  return n >= prefix->len && memcmp(p, prefix->buf, prefix->len) == 0;
}

eg_err eg_key_session(eg_key *k, const char *tenant, const char *session_id) {
  eg_key_init(k);
  eg_err e = eg_key_id(k, tenant);
  return e ? e : eg_key_tail(k, session_id);
}

eg_err eg_key_user(eg_key *k, const char *tenant, const char *user_id) {
  eg_key_init(k);
  eg_err e = eg_key_id(k, tenant);
  return e ? e : eg_key_id(k, user_id);
}

eg_err eg_key_user_session(eg_key *k, const char *tenant, const char *user_id,
                           uint64_t create_us, const char *session_id) {
  eg_err e = eg_key_user(k, tenant, user_id);
  if (!e) e = eg_key_u64(k, create_us);
  return e ? e : eg_key_tail(k, session_id);
}

eg_err eg_key_session_range(eg_key *k, const char *tenant, const char *session_id) {
  eg_key_init(k);
  eg_err e = eg_key_id(k, tenant);
  return e ? e : eg_key_id(k, session_id);
}

eg_err eg_key_message(eg_key *k, const char *tenant, const char *session_id, uint64_t seq) {
  eg_err e = eg_key_session_range(k, tenant, session_id);
  return e ? e : eg_key_u64(k, seq);
}

eg_err eg_key_idem(eg_key *k, const char *tenant, const char *session_id,
                   const char *client_message_id) {
  eg_err e = eg_key_session_range(k, tenant, session_id);
  return e ? e : eg_key_tail(k, client_message_id);
}

eg_err eg_key_tenant(eg_key *k, const char *tenant) {
  eg_key_init(k);
  return eg_key_id(k, tenant);
}

eg_err eg_key_activity(eg_key *k, const char *tenant, uint64_t last_activity_us,
                       const char *session_id) {
  eg_err e = eg_key_tenant(k, tenant);
  if (!e) e = eg_key_u64(k, last_activity_us);
  return e ? e : eg_key_tail(k, session_id);
}

eg_err eg_key_term_range(eg_key *k, const char *tenant, uint64_t term) {
  eg_err e = eg_key_tenant(k, tenant);
  return e ? e : eg_key_u64(k, term);
}

eg_err eg_key_session_term(eg_key *k, const char *tenant, uint64_t term, const char *session_id) {
  eg_err e = eg_key_term_range(k, tenant, term);
  return e ? e : eg_key_tail(k, session_id);
}

eg_err eg_key_message_term_user(eg_key *k, const char *tenant, uint64_t term,
                                const char *user_id) {
  eg_err e = eg_key_term_range(k, tenant, term);
  return e ? e : eg_key_id(k, user_id);
}

eg_err eg_key_message_term(eg_key *k, const char *tenant, uint64_t term, const char *user_id,
                           uint64_t create_us, const char *session_id, uint64_t seq) {
  eg_err e = eg_key_message_term_user(k, tenant, term, user_id);
  if (!e) e = eg_key_u64(k, create_us);
  if (!e) e = eg_key_id(k, session_id);
  return e ? e : eg_key_u64(k, seq);
}

eg_err eg_key_sweep_kind(eg_key *k, unsigned kind) {
  uint8_t b = (uint8_t)kind;
  /* Kinds are 1..255: a zero byte would be no kind at all. */
  if (kind == 0 || kind > 255) return EG_EINVAL;
  eg_key_init(k);
  return eg_key_raw(k, &b, 1);
}

eg_err eg_key_sweep_tenant(eg_key *k, unsigned kind, const char *tenant) {
  eg_err e = eg_key_sweep_kind(k, kind);
  return e ? e : eg_key_id(k, tenant);
}

eg_err eg_key_sweep(eg_key *k, unsigned kind, const char *tenant, uint64_t due_us,
                    const char *id) {
  eg_err e = eg_key_sweep_tenant(k, kind, tenant);
  if (!e) e = eg_key_u64(k, due_us);
  return e ? e : eg_key_tail(k, id);
}
