/*
 * Which master key the blind index is under: the store's blind-index key
 * id (key_jobs "blind_index", storage/key_jobs.h; replicated), or the
 * keyring's lowest key id when the store has no row (a store written
 * before blind-index rotation reads as it was written). Every producer of
 * blind tokens (eg_blind_ctx_of: memory terms and filter tokens, session
 * metadata terms, message terms, checkpoint and store-value JSON terms)
 * and every query takes its context under this id.
 */
#ifndef EG_SERVER_BLIND_KEY_H
#define EG_SERVER_BLIND_KEY_H

#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"
#include "server/service.h"

/* The store's blind-index key id as t sees it into *current (the row's,
 * else eg_keyring_blind_key_id(kr); 0 for a NULL kr) and the id a rotation
 * moves it to into *target (0: none runs). EG_ECORRUPT for a row that
 * does not decode, or a storage error. */
eg_err eg_blind_key_ids(eg_txn *t, const eg_keyring *kr, uint32_t *current, uint32_t *target);

/* Loads srv->blind_key_id from the store's row (a read txn of its own;
 * no row leaves it 0), for the writes whose prepare reads no snapshot.
 * Thread safety: main, at start. */
eg_err eg_blind_key_load(eg_srv *srv);

/* The blind-index key id r's blind contexts take: as r->rtxn sees it (a
 * read, or a write whose prepare reads), else srv->blind_key_id. */
eg_err eg_blind_key_of(eg_req *r, uint32_t *id);

#endif
