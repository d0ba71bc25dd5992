/*
 * The background reindex of the keyword indexes, and the versioned reads
 * that keep search whole while it runs.
 *
 * State. Each keyword index (EG_INDEX_MEMORIES, EG_INDEX_MESSAGES) has a
 * row in index_state (storage/message_index.h; replicated like data): the
 * tokenizer version every entry is at, and while a job runs its target,
 * cursor, done, total and start time. Migration 6 writes both rows
 * (storage/migrate.c: version 2 on a new store, so it never reindexes).
 * A row missing all the same reads as EG_TOKENIZER_VERSION while the index
 * covers no record, else as the oldest version its records may be at
 * (memories 1, messages 0).
 *
 * Jobs. A thread like the sweeper's (server/sweeper.h): it works only
 * while this node is an unfenced primary (a promoted replica takes over
 * where the old primary's replicated state stopped). Each time round:
 *   - --index-messages=false: "messages" is set to version 0 unless it is
 *     (a job on it ends), so that messages appended meanwhile, which are
 *     not indexed, are reindexed once indexing is on again;
 *   - an index below EG_TOKENIZER_VERSION with no job gets one (target
 *     EG_TOKENIZER_VERSION, total eg_store_index_records, the start time);
 *     with --index-messages=false "messages" gets none;
 *   - a job takes one step: in a read txn it walks at most --reindex-batch
 *     records after the cursor (eg_store_memories_walk,
 *     eg_store_messages_walk) and, for each whose index_version is below
 *     the target, opens its text (memory text, message content) and
 *     computes its terms with the tokenizer at the target (memory: in its
 *     language, its negation flag too; message: in its session's
 *     language; a message whose session is gone or excluded from search is
 *     skipped). Then one write item, through the writer, reads each of
 *     them again: at the target already, nothing to do; the same text
 *     (sealed token bytes) and language (message: its session still there
 *     and not excluded) as walked, the new terms go onto the record as it
 *     is now (an update in between copies the old record, old entries and
 *     all: skipped, it would stay below the target for good); else the
 *     step stops before it (cursor = the key before it) and the next step
 *     reads it again. Each record is written in a sub txn of the item's: a
 *     record whose text does not open, or whose write refuses it
 *     (EG_EINVAL, EG_ECORRUPT: eg_rec_check, malformed old index fields),
 *     is left as it is, logged once with its key and counted
 *     (eg_reindex_stats.skipped), and the others are written: a retry
 *     would only meet it again. The item stores the state (cursor = the
 *     last key walked, done += records walked) in the same txn. When the
 *     walk finds no more, the same item sets version = target and ends
 *     the job: one walk is enough, since no writer puts a record below the
 *     target behind the cursor (appends and forks index their messages at
 *     the current version; a memory write does too, or keeps the record's
 *     own; --index-messages=false ends the job first).
 * A restart resumes from the stored cursor; a step that fails (logged)
 * is retried the next time round. At most --reindex-rate records a second
 * (the thread sleeps between steps; a stop wakes it at once).
 *
 * Versioned reads. While "memories" is below EG_TOKENIZER_VERSION,
 * SearchMemories and de-duplication read the query (or the new text) with
 * every version from the row's up to EG_TOKENIZER_VERSION, and match each
 * stored memory with the terms of its own index_version: the old entries
 * answer for the memories not converted yet, so nothing is missed mid-job.
 * Afterwards only the current version is read. (Messages need none: their
 * index starts at version 2; an unindexed message, version 0, has no
 * entries to match.)
 *
 * Blind keys (server/blind_key.h). A step tokenizes under the write key
 * (eg_blind_ctx_of); a message's terms are its only blind tokens, so the
 * rewrite stamps it with that key. A memory keeps its other tokens (and
 * its stamp), so its terms are made under its own key: the write key, but
 * for a memory a paused blind-index rotation left under the old one (a job
 * may run while a rotation is paused, and a memory stuck as unreadable may
 * be readable again by then). A rotation that walks and a job never run
 * together: this thread also runs the rotation's steps
 * (server/blind_rotation.h), only when no tokenizer job has a step; no job
 * begins while a rotation walks (the control item reads the rotation's row
 * in its txn), and RotateBlindIndexKey (a start or a resume) is refused
 * while a job runs. The versioned reads
 * also read under every read key (memory_versions.h).
 */
#ifndef EG_SERVER_REINDEX_H
#define EG_SERVER_REINDEX_H

#include <stdint.h>

#include "common/err.h"
#include "engram/v1/admin.pb-c.h"
#include "server/service.h"
#include "server/writer.h"

typedef struct eg_reindex eg_reindex;

/* The indexes, in GetStatus's and the metrics' order. */
enum { EG_REINDEX_MEMORIES = 0, EG_REINDEX_MESSAGES = 1, EG_REINDEX_INDEXES = 2 };
/* The index_state name of index i (EG_INDEX_MEMORIES, EG_INDEX_MESSAGES). */
const char *eg_reindex_name(unsigned i);

/* Starts the thread over srv's store, keys, config and replication role;
 * it submits to writer. EG_ENOMEM or EG_EUNAVAIL with err set. */
eg_err eg_reindex_start(eg_srv *srv, eg_writer *writer, eg_reindex **out, char *err,
                        size_t errlen);
/* Stops the thread after its item in flight (the writer must still run),
 * and frees x. NULL is fine. */
void eg_reindex_stop(eg_reindex *x);

typedef struct {
  uint64_t records[EG_REINDEX_INDEXES]; /* records this node's jobs walked */
  uint64_t skipped[EG_REINDEX_INDEXES]; /* of them, left below the target (logged) */
  uint64_t pending[EG_REINDEX_INDEXES]; /* total - done of a running job, else 0 */
} eg_reindex_stats;
/* As of the thread's last look at index_state (every node looks, so a
 * replica shows the primary's progress). x may be NULL (all zeros).
 * Thread safety: any thread. */
void eg_reindex_get_stats(const eg_reindex *x, eg_reindex_stats *out);

/* The lowest tokenizer version whose entries index `name` may still hold
 * (1 at least): versioned reads read EG_TOKENIZER_VERSION down to it. */
eg_err eg_index_read_from(eg_txn *t, const char *name, unsigned *version);

/* GetStatusResponse.indexes: both indexes' state as t sees it, in the
 * arena of r. */
eg_err eg_index_status(eg_req *r, eg_txn *t, Engram__V1__GetStatusResponse *out);

#endif
