/*
 * Session metadata to blind-index terms (SessionRecord.metadata_hashes and
 * the session_terms DB): one keyed hash per key=value pair, under the
 * tenant's blind key (the one memories' terms use), so the index holds no
 * plaintext and one tenant's terms say nothing about another's. What is
 * returned lives in r->arena. Thread safety: one eg_req, one thread.
 */
#ifndef EG_SERVER_SESSION_TERMS_H
#define EG_SERVER_SESSION_TERMS_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "server/convert.h"
#include "server/service.h"

/* The term of metadata[key] == value. */
eg_err eg_session_term(eg_req *r, const eg_blind_ctx *ctx, const char *key, const char *value,
                       uint64_t *out);

/* The terms of a metadata map, as SessionRecord.metadata_hashes wants
 * them: sorted, unique, at most EG_SESSION_TERMS_MAX. A map with more keys
 * indexes its EG_SESSION_TERMS_MAX smallest keys in byte order (so a
 * filter on another key never matches); call after eg_metadata_pack has
 * checked the map. *out is NULL when *n is 0. */
eg_err eg_session_terms(eg_req *r, eg_kv_entry **entries, size_t n, uint64_t **out, size_t *nout);

#endif
