/*
 * storage: the keyword index of messages (SessionService.SearchMessages),
 * its per-tenant and per-user statistics, the state of the keyword
 * indexes' background reindex, and the walks that reindex takes. Part of
 * the storage API (storage.h includes this header); same transaction
 * rules.
 *
 * Key layout (u8len = one length byte; BE = big-endian; T = tenant,
 * U = user_id, S = session_id):
 *   message_terms       u8len T | term u64 BE | u8len U | create_us u64 BE |
 *                       u8len S | seq u64 BE  -> posting (below)
 *   message_index_stats u8len T               -> stats of the tenant
 *                       u8len T | u8len U     -> stats of one user
 *   index_state         index name ("memories", "messages") -> IndexStateRecord
 * posting (LE): u8 layout (1) | u8 role | u8 tf | u8 0 | u32 words
 *   (role: engram.v1.Role; tf: the term's count in the message, capped at
 *   255; words: MessageRecord.index_words, BM25's document length).
 * stats (LE): u64 messages indexed | u64 their words in all.
 *
 * A term's postings lie together, user by user, each user's by create
 * time: a user's search reads one contiguous range per word (narrowed by a
 * time range) backwards; a search of several users (or of the tenant)
 * merges those users' ranges newest first, one cursor per user.
 *
 * The message record is the truth: eg_store_message_put writes a posting
 * per MessageRecord.index_terms entry (when index_version is not 0) and
 * adds to both stats; every path that deletes a message (session delete,
 * retention's purge and warm tier, DeleteUser's erasure) removes them
 * from the record it deletes, in the same txn, so no index key outlives
 * its message.
 */
#ifndef EG_STORAGE_MESSAGE_INDEX_H
#define EG_STORAGE_MESSAGE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engram/storage/v1/records.pb-c.h"

typedef Engram__Storage__V1__MessageRecord eg_message_rec;
typedef Engram__Storage__V1__IndexStateRecord eg_index_state_rec;
typedef struct eg_txn eg_txn;

/* Most index_terms one message may carry (the first distinct words of a
 * longer text are indexed). */
#define EG_MESSAGE_TERMS_MAX 512
/* Index names of index_state. */
#define EG_INDEX_MEMORIES "memories"
#define EG_INDEX_MESSAGES "messages"

/* One posting, as eg_store_message_postings hands it over; the strings
 * point into the key (not NUL-terminated), valid during the call. */
typedef struct {
  const char *user_id, *session_id;
  size_t user_len, session_len;
  int64_t create_us;
  uint64_t seq;
  int role;
  unsigned tf;
  uint32_t words;
} eg_message_posting;

/* Return nonzero to stop. */
typedef int (*eg_message_posting_fn)(void *arg, const eg_message_posting *p);

/* Most users one read of a term merges: with more, the read is cut. */
#define EG_MESSAGE_MERGE_USERS_MAX 10000

/* Visits the postings of term in tenant created in [from_us, to_us)
 * (to_us 0: no upper bound), newest first across the users read: by create
 * time descending, ties by user id, then session id, then seq, all
 * descending (ids in key order: length, then bytes). The users read:
 * users[0..n_users), strictly ascending by strcmp and at most
 * EG_MESSAGE_MERGE_USERS_MAX (else EG_EINVAL; n_users 0: none); or, with
 * users NULL, every user holding the term in the tenant, at most the
 * first max_users (<= EG_MESSAGE_MERGE_USERS_MAX, else EG_EINVAL) of them
 * in key order: *users_cut is set when more hold it (those are not read),
 * else cleared; *users_read (may be NULL) gets how many were read (0 when
 * users is given). fn returning nonzero stops the read.
 * Cost: one seek per user named, or two per user holding the term (in
 * the time range or not, at most max_users + 1) with users NULL; then O(log users) per posting
 * visited. Memory: one LMDB cursor and ~200 bytes per user with a posting
 * in range (a single user's read allocates nothing). */
eg_err eg_store_message_postings(eg_txn *t, const char *tenant, const char *const *users,
                                 size_t n_users, size_t max_users, uint64_t term, int64_t from_us,
                                 int64_t to_us, eg_message_posting_fn fn, void *arg,
                                 int *users_cut, size_t *users_read);

/* The messages indexed and their words in all: of user_id, or of the whole
 * tenant when user_id is NULL. Zeros when none. */
eg_err eg_store_message_index_stats(eg_txn *t, const char *tenant, const char *user_id,
                                    uint64_t *messages, uint64_t *words);

/* Replaces the stored message prev (read in this txn) with rec (same seq):
 * prev's postings and stats go, rec's come (either may be unindexed). For
 * the reindex, which sets a message's index fields after the fact.
 * EG_EINVAL when rec is not prev's message (another seq or create time)
 * or its index fields are refused as by eg_store_message_put. */
eg_err eg_store_message_reindex(eg_txn *t, const char *tenant, const char *session_id,
                                const eg_message_rec *prev, const eg_message_rec *rec);

/* ---- walks for the background reindex ------------------------------------ */

/* Called per message in key order (tenant, session_id, seq): the message's
 * key (the cursor to resume after), its tenant and session id (NUL-
 * terminated copies, valid during the call) and record (the callee's to
 * free or keep). Return nonzero to stop. */
typedef int (*eg_message_walk_fn)(void *arg, const uint8_t *key, size_t key_len,
                                  const char *tenant, const char *session_id, eg_message_rec *rec);
/* Visits at most max messages of every tenant, in key order, strictly
 * after the key after[0..after_len) (after_len 0: from the first). *more
 * is set when messages remain past the last visited. Cost: O(log n +
 * max). */
eg_err eg_store_messages_walk(eg_txn *t, const uint8_t *after, size_t after_len, size_t max,
                              eg_message_walk_fn fn, void *arg, int *more);

/* ---- index state -------------------------------------------------------- */

/* The state of index `name` (EG_INDEX_*). EG_ENOTFOUND when it has none
 * (migration 6 writes both rows; server/reindex.c says how a missing one
 * is read). */
eg_err eg_store_index_state_get(eg_txn *t, const char *name, eg_index_state_rec **out);
/* Stores rec as the state of index `name` (logged and replicated);
 * EG_EINVAL for a cursor longer than a key (511 bytes). */
eg_err eg_store_index_state_put(eg_txn *t, const char *name, const eg_index_state_rec *rec);
/* The records index `name` covers (the entries of the memories or the
 * messages DB) as t sees them: a reindex's total. Cost: O(1). */
eg_err eg_store_index_records(eg_txn *t, const char *name, uint64_t *n);

#endif
