/*
 * Blind-index key rotation: the background re-index of every blind token
 * under a new master key's blind subkey, and the switch to it.
 *
 * Start. RotateBlindIndexKey (server/svc_key_rotation.c; admin, a write:
 * a replica forwards it) stores the row (key_jobs "blind_index",
 * server/blind_key.h) with target_key_id = the keyring's primary id,
 * legacy_key_id (kept from the row, else the key id current before: set
 * on the first rotation, never changed after), pass 1 from the first
 * kind. From that commit every write indexes under the target
 * (eg_blind_key_check refuses a write prepared under the old key) and
 * every query reads under both keys, matching each record under its own.
 * A target equal to key_id: nothing to do (answered, nothing written). A
 * rotation running: reported as it is (the call is idempotent). A paused
 * one (below): resumed, a new pass from the first kind toward the row's
 * target (its stuck counts and problem cleared); refused like a start
 * while a tokenizer reindex runs.
 *
 * The walk. A step of the reindex thread (server/reindex.h), so it never
 * runs alongside a tokenizer reindex: the thread takes a tokenizer job's
 * steps first, RotateBlindIndexKey is refused (FAILED_PRECONDITION) while
 * one runs, and no tokenizer job begins while a rotation runs (the
 * reindex's control item reads the row in its txn): one waits for the
 * other (a paused rotation holds off nothing: eg_blind_rotation_running
 * is false for it). On an unfenced primary only; a restart or a promoted
 * replica goes on from the row (replicated), a paused one staying paused.
 * Each step, in a read txn, walks at most --reindex-batch records of the
 * row's kind after its cursor
 * (eg_store_blind_walk: memories, messages, sessions, checkpoints, store
 * items, every tenant's) and, for each record with blind tokens under
 * another key than the target, opens its sealed fields and computes every
 * blind token again under the target (memories: eg_memory_blind_rehash;
 * messages: their terms in their session's language; sessions: metadata
 * pairs; checkpoints: metadata pairs; store items: value pairs). Then
 * one write through the writer
 * (eg_writer_run_alone) checks the row is still the one walked, reads
 * each record again, and puts the converted copy only if the record is
 * byte for byte as walked (else it is left: this pass counts it found, so
 * a later pass takes it again); the same txn stores the row (cursor,
 * done, pass_found, the stuck counts). At most --reindex-rate records a
 * second (the reindex thread's sleep, shared with tokenizer jobs).
 *
 * The switch. After the last kind, a pass that found records under
 * another key starts another pass if it converted some of them (or met
 * some changed since its walk), and pauses if every one was stuck (below);
 * a pass that found none (every record walked already under the target)
 * ends the rotation in the same write:
 * key_id = target, target = 0, the finish time. So the switch never
 * follows a pass in which any record of any kind was under the old key;
 * and no record under the old key can appear behind a pass's cursor,
 * since every write that makes a record (a new key, behind the cursor or
 * not) tokenizes under the write key, checked at apply, ForkSession's
 * copy of its source's metadata terms included (made again, not copied).
 * After the switch queries read only the new key.
 * Mid-rotation, queries return the same records (each matched under its
 * own key) with the same scores: a query's words are tokenized under both
 * read keys lined up (eg_text_terms_lined: index i is one word under
 * either key), and a word's document frequency, hence BM25's idf, the
 * query idf that normalizes memory keyword scores and SearchMessages' per
 * word postings budget, spans its postings under both keys (a record's
 * are all under its own key: none is counted twice). So ranks, top_k and
 * scores are the ones of the index under one key, before, during and
 * after the rotation (but for a SearchMessages word cut by its budget:
 * its postings are read one key after the other, each newest first).
 * A one-call write takes one write key (eg_blind_ctx_of): a call whose
 * prepare and apply straddle the start answers ABORTED (retry), each item
 * of a batch checked on its own.
 *
 * Stuck records. A record under another key that the walk cannot convert
 * is counted found, so the switch waits for it (switching would leave its
 * tokens under a key no query reads: once readable again, the record
 * would be invisible to every search and filter), and stuck, with its
 * reason (EG_BR_STUCK_*): its sealed fields do not open (EG_ECORRUPT:
 * tampered, or its data key wrapped under a master key missing from the
 * keyring now), a checkpoint whose user holds no data key (below), or its
 * converted copy refused (EG_EINVAL or EG_ECORRUPT: by its terms, or by
 * the store's put in the write). Not counted at all: a record of a user
 * erased since (EG_EERASED: its data keys destroyed, it opens under no key
 * again and no query returns it; a checkpoint too, its user found among
 * the erased ones, when a DeleteUser that did not finish left it) and a
 * message whose session is gone (swept with it). A pass logs its first
 * EG_BR_STUCK_LOGGED stuck records by name, a step its first uncounted
 * ones; the rest are counted. A pass that ends with every record it found stuck
 * pauses the rotation: the row keeps target_key_id (writes under the
 * target, queries read both keys: nothing lost or hidden), sets paused,
 * and its problem names the count, the kinds, the reasons, the first
 * stuck record (kind, tenant, id, why) and what to do: restore the
 * missing master key, or rewrite or delete the records, then call
 * RotateBlindIndexKey (engram admin keys rotate-blind) to resume. While
 * paused the reindex thread takes no rotation step and tokenizer
 * reindexes may begin and run (under the write key, the target; a memory
 * under the old key keeps its own: server/reindex.h); GetKeyStatus says
 * running false, paused, the problem; key retirement keeps key_id, target
 * and legacy as while it runs (server/key_retire.h).
 *
 * Checkpoints. A checkpoint's key holds digests of its user and thread,
 * and its sealed metadata needs the user's id and data key: the walk
 * finds the user among the key store's users of its tenant whose digest
 * the key holds (eg_data_keys_each_known_user, erased users included;
 * O(users) per checkpoint converted). A checkpoint whose user was
 * erased: its data-key fields answer EG_EERASED (left, uncounted, above),
 * format 1 ones (sealed under a master key) still open and convert. A
 * checkpoint whose user never held a data
 * key (format 1 tokens only, from before envelope keys) cannot be opened
 * so: it is counted
 * found, stuck (EG_BR_STUCK_NO_USER): such a store's rotation pauses
 * rather than switch (it keeps reading both keys; nothing is lost) until
 * the checkpoint is rewritten (PutCheckpoint) or deleted and the rotation
 * resumed.
 */
#ifndef EG_SERVER_BLIND_ROTATION_H
#define EG_SERVER_BLIND_ROTATION_H

#include <stdint.h>

#include "common/err.h"
#include "engram/v1/admin.pb-c.h"
#include "server/service.h"
#include "server/writer.h"

/* Why a record is stuck: the bits of the row's stuck_reasons. */
enum {
  EG_BR_STUCK_UNREADABLE, /* its sealed fields do not open */
  EG_BR_STUCK_NO_USER,    /* a checkpoint whose user holds no data key */
  EG_BR_STUCK_REFUSED,    /* its converted copy refused */
  EG_BR_STUCK_REASONS
};

/* One step of the running rotation (the reindex thread's: it reads through
 * reader, writes through writer, walks at most batch records). *walked:
 * the records read. EG_ENOTFOUND when no rotation runs (nothing done);
 * EG_EABORTED if the row moved meanwhile; else a storage error or
 * EG_ENOMEM (nothing written); EG_ENOTFOUND too for a paused one. Logs
 * what it converts, skips, finds stuck, the pause and the switch. */
eg_err eg_blind_rotation_step(eg_srv *srv, eg_writer *writer, eg_txn *reader, size_t batch,
                              uint64_t *walked);

/* Whether a rotation walks as t sees it: the row's target set and not
 * paused (a paused one takes no step and holds off no tokenizer reindex;
 * its target is the write key still: eg_blind_keys_get). */
eg_err eg_blind_rotation_running(eg_txn *t, int *running);

/* The records of every kind as t sees them (eg_store_blind_count): a
 * pass's total. */
eg_err eg_blind_rotation_total(eg_txn *t, uint64_t *total);

/* row set to begin walking pass `pass` from the first kind: cursor, done,
 * the pass's found and stuck counts, paused and problem cleared (a start,
 * a resume, and the pass after one that converted some). */
void eg_blind_rotation_pass_begin(eg_blind_key_rec *row, uint32_t pass);

/* A KeyRotationStatus (kind "blind_index", scope "") of rec in r's arena:
 * running only while it walks, paused with problem saying why. */
eg_err eg_blind_rotation_api(eg_req *r, const eg_blind_key_rec *rec,
                             Engram__V1__KeyRotationStatus **out);

#endif
