/*
 * Which master key the blind index is under: the store's blind-index key
 * row (key_jobs "blind_index", storage/key_jobs.h; replicated), or the
 * keyring's lowest key id when the store has no row (a store written
 * before blind-index rotation reads as it was written).
 *
 * Rotation (server/blind_rotation.h). The row's key_id is the key the
 * index is under; while a rotation runs (or is paused), target_key_id is
 * the key it moves to. Each record carrying blind tokens (memories, messages, sessions,
 * checkpoints, store items) says the key id its tokens are under
 * (blind_key_id; 0: the row's legacy_key_id, the key id current when the
 * first rotation began, else the keyring's lowest). Writes index under
 * the write key (target while a rotation runs, else key_id: eg_blind_ctx_of)
 * and stamp it on the record; queries compute their tokens under every
 * read key (key_id, and target while a rotation runs: eg_blind_read_ctxs)
 * and match each record with the tokens of its own key. A write whose
 * prepare took another write key than its apply sees is refused with
 * ABORTED (eg_blind_key_check, the dispatcher's), so no record lands under
 * the old key behind the rotation's walk.
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

/* The row as t sees it: current and target as eg_blind_key_ids, legacy
 * the key id of records whose blind_key_id is 0, paused whether the
 * rotation to target is paused (server/blind_rotation.h "Stuck records":
 * its target is the write key and a read key all the same). */
typedef struct {
  uint32_t current, target, legacy;
  int paused;
} eg_blind_keys;
eg_err eg_blind_keys_get(eg_txn *t, const eg_keyring *kr, eg_blind_keys *out);
/* The key new tokens are made under: target while a rotation runs. */
uint32_t eg_blind_keys_write(const eg_blind_keys *k);
/* The key a record stamped `stored` (its blind_key_id) is under. */
uint32_t eg_blind_keys_rec(const eg_blind_keys *k, uint32_t stored);

/* Loads srv->blind_key_id (the write key) from the store's row (a read
 * txn of its own; no row leaves it 0), for the writes whose prepare reads
 * no snapshot. Thread safety: any thread (eg_blind_key_check sets it too,
 * RotateBlindIndexKey when it begins a rotation, and the reindex thread
 * loads it each time round on every node, so a promoted replica has it;
 * the switch leaves the write key as it was: the target). */
eg_err eg_blind_key_load(eg_srv *srv);

/* Why srv->blind_key_id may be set from a txn before its commit is
 * durable (eg_blind_key_check and RotateBlindIndexKey set it from the
 * writer's txn; the reindex thread loads it from a snapshot that, with
 * --meta-sync next-flush, may be committed but not yet flushed): the
 * value is a hint, never the authority. A write's prepare takes its
 * blind contexts under it, and its apply compares that key with the row
 * as its own txn sees it (eg_blind_key_check), so a record is only ever
 * stamped and indexed under the key its txn says, whatever the hint said.
 * A wrong hint costs answers, never data: the writes prepared under it
 * answer ABORTED (nothing written) until the first such apply sets it to
 * the key its txn sees (the reindex thread's next load does too, at its
 * next round: after its step's pacing, --reindex-batch / --reindex-rate
 * seconds at most), and the clients' retries succeed. It is wrong only when the
 * commit of the batch that moved the row failed (ENOSPC, EIO; a flush
 * that fails breaks the store, eg_store_sync), or for a moment when the
 * reindex thread stores what an older snapshot said over a newer value.
 * A commit lost to a crash takes the hint with it (a restart loads it
 * from the store). Setting it only after a durable commit (from the
 * dispatcher's done callback, the writer's one post-commit hook) would
 * need a field in every request and a branch after every write for the
 * failed-commit case alone, and the reindex thread's load would still
 * publish commits not yet flushed; not done. */

/* The write key r's blind contexts take: as r->rtxn sees it (a read, or a
 * write whose prepare reads), else srv->blind_key_id. */
eg_err eg_blind_key_of(eg_req *r, uint32_t *id);

/* A context under key id for r's tenant (a record's own key, when a
 * write keeps its tokens as they are), wiped when the call ends. */
eg_err eg_blind_ctx_under(eg_req *r, uint32_t id, eg_blind_ctx **out);

/* For the dispatcher's apply of a write: EG_OK when r took no blind
 * context or the one it took is still the write key as t sees it; else
 * EG_EABORTED with r->msg saying so (a rotation began or ended since its
 * prepare: the client retries), and srv->blind_key_id set to the write
 * key t sees, so that the retry takes it. Cost: one read of the row. */
eg_err eg_blind_key_check(eg_req *r, eg_txn *t);

/* The contexts a query matches records with: ctx[0] under current and,
 * while a rotation runs, ctx[1] under target (n 2); each record is
 * matched with the one whose id is its key (eg_blind_read_pick). */
#define EG_BLIND_READ_MAX 2
typedef struct {
  unsigned n;
  uint32_t id[EG_BLIND_READ_MAX];
  uint32_t legacy;
  eg_blind_ctx *ctx[EG_BLIND_READ_MAX];
} eg_blind_read;
/* As t sees the row (a read's r->rtxn; a write's txn for what it
 * compares), in r's arena, wiped when the call ends. Returns EG_OK,
 * EG_ENOMEM or the error of eg_blind_keys_get. */
eg_err eg_blind_read_ctxs(eg_req *r, eg_txn *t, eg_blind_read *out);
/* The index in q of the key a record stamped `stored` is under; q->n when
 * it is under neither (not expected: no such record matches). */
unsigned eg_blind_read_pick(const eg_blind_read *q, uint32_t stored);

#endif
