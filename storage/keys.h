/*
 * Private to storage/: the byte-string keys of storage.h's key layout.
 *
 * A key is built by appending parts to an eg_key; every builder checks
 * lengths, so a key that does not fit the layout is EG_EINVAL before it
 * reaches LMDB. Ids are length-prefixed (one u8) wherever something follows
 * them, so "s1" and "s10" never share a range; numbers are big-endian so
 * byte order is numeric order.
 */
#ifndef EG_STORAGE_KEYS_H
#define EG_STORAGE_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* LMDB's default maximum key size; the longest layout key is well below. */
#define EG_KEY_MAX 511

typedef struct {
  uint8_t buf[EG_KEY_MAX];
  size_t len;
} eg_key;

/* ---- parts ---------------------------------------------------------------- */

static inline void eg_key_init(eg_key *k) { k->len = 0; }
/* Appends u8len | id. EG_EINVAL if id is empty or longer than EG_STORE_ID_MAX. */
eg_err eg_key_id(eg_key *k, const char *id);
/* Appends id as it is (the last part of a key). Same limits as eg_key_id. */
eg_err eg_key_tail(eg_key *k, const char *id);
/* Appends n raw bytes. EG_EINVAL if the key would exceed EG_KEY_MAX. */
eg_err eg_key_raw(eg_key *k, const void *p, size_t n);
/* Appends v as 8 bytes big-endian. */
eg_err eg_key_u64(eg_key *k, uint64_t v);

void eg_be64_put(uint8_t *p, uint64_t v);
uint64_t eg_be64_get(const uint8_t *p);
void eg_be32_put(uint8_t *p, uint32_t v);
uint32_t eg_be32_get(const uint8_t *p);

/* Nonzero if the n bytes at p start with prefix. */
int eg_key_has_prefix(const void *p, size_t n, const eg_key *prefix);

/* ---- whole keys (see storage.h for the layout) ------------------------------ */

/* sessions: u8len tenant | session_id */
eg_err eg_key_session(eg_key *k, const char *tenant, const char *session_id);
/* sessions_by_user prefix of one user, and a user's message_index_stats
 * key: u8len tenant | u8len user_id */
eg_err eg_key_user(eg_key *k, const char *tenant, const char *user_id);
/* sessions_by_user entry: user prefix | create_us BE | session_id */
eg_err eg_key_user_session(eg_key *k, const char *tenant, const char *user_id,
                           uint64_t create_us, const char *session_id);
/* messages and idempotency prefix of one session: u8len tenant | u8len session_id */
eg_err eg_key_session_range(eg_key *k, const char *tenant, const char *session_id);
/* messages: session range | seq BE */
eg_err eg_key_message(eg_key *k, const char *tenant, const char *session_id, uint64_t seq);
/* idempotency: session range | client_message_id */
eg_err eg_key_idem(eg_key *k, const char *tenant, const char *session_id,
                   const char *client_message_id);
/* A tenant's range (sessions_by_activity, session_terms, message_terms)
 * and its retention and message_index_stats key: u8len tenant */
eg_err eg_key_tenant(eg_key *k, const char *tenant);
/* sessions_by_activity: u8len tenant | last_activity_us BE | session_id */
eg_err eg_key_activity(eg_key *k, const char *tenant, uint64_t last_activity_us,
                       const char *session_id);
/* session_terms and message_terms prefix of one term: u8len tenant | term BE */
eg_err eg_key_term_range(eg_key *k, const char *tenant, uint64_t term);
/* session_terms: term prefix | session_id */
eg_err eg_key_session_term(eg_key *k, const char *tenant, uint64_t term, const char *session_id);
/* message_terms prefix of one term's postings of one user (the term's
 * prefix is eg_key_term_range): u8len tenant | term BE | u8len user_id */
eg_err eg_key_message_term_user(eg_key *k, const char *tenant, uint64_t term,
                                const char *user_id);
/* message_terms posting: user prefix | create_us BE | u8len session_id | seq BE */
eg_err eg_key_message_term(eg_key *k, const char *tenant, uint64_t term, const char *user_id,
                           uint64_t create_us, const char *session_id, uint64_t seq);
/* sweep_due prefix of one kind: u8 kind */
eg_err eg_key_sweep_kind(eg_key *k, unsigned kind);
/* sweep_due prefix of one kind and tenant: u8 kind | u8len tenant */
eg_err eg_key_sweep_tenant(eg_key *k, unsigned kind, const char *tenant);
/* sweep_due: kind and tenant prefix | due_us BE | id */
eg_err eg_key_sweep(eg_key *k, unsigned kind, const char *tenant, uint64_t due_us,
                    const char *id);

#endif
