/*
 * The sweeper: retention tiers, applied on the primary.
 *
 * A thread that, every --sweep-interval-ms, hands the writer one write
 * item (group-committed and replicated like any write) that works through
 * the due work of the sweep_due index (storage.h), kind by kind and tenant
 * by tenant, and deletes what is past the tenant's retention:
 *   EG_SWEEP_SESSION_GONE      the session (expired_session_retention):
 *                              retired in one step, record and index
 *                              entries, so no read finds it any more
 *   EG_SWEEP_SESSION_PURGE     then a retired session's messages and retry
 *                              records, whatever the policy has become
 *                              (swept first in a pass)
 *   EG_SWEEP_SESSION_MESSAGES  messages older than raw_message_retention
 *   EG_SWEEP_MEMORY_TOMBSTONE  DELETED/DUPLICATE/SUPERSEDED memories
 *                              (memory_tombstone_retention)
 *   EG_SWEEP_MEMORY_EXPIRE     expired memories (--memory-expired-grace-s)
 * and store items past their TTL (their own expiry index,
 * storage/store_items.h): first in each step with at most half of its
 * budget, so a backlog of them never starves the kinds above, then with
 * what those left, so when nothing else is due a step's whole budget goes
 * to them.
 * A tier of 0 keeps forever. Each item handles at most --sweep-batch
 * records (a message, a session, a memory, or a tenant looked at), and
 * its message deletes (both kinds) at most EG_SWEEP_STEP_KEYS_MAX keys in
 * all, and remembers where it stopped, so a large backlog is worked off
 * one bounded transaction per interval and never holds the write txn for
 * long. Its
 * cost is what is due (plus one seek per tenant with due entries), never a
 * scan of all data. A replica sweeps nothing: it applies the primary's
 * sweeps from the log (a promoted replica starts sweeping).
 */
#ifndef EG_SERVER_SWEEPER_H
#define EG_SERVER_SWEEPER_H

#include <stdint.h>

#include "common/err.h"
#include "server/config.h"
#include "server/writer.h"
#include "storage/storage.h"

struct eg_repl;
typedef struct eg_sweeper eg_sweeper;

/* The most keys one item's message deletes remove: a message, each of its
 * keyword postings (up to EG_MESSAGE_TERMS_MAX) and its retry record count
 * one each; the item's first message goes whatever its count (a step
 * always moves on), no other pushes the total past the cap, and once a
 * message does not fit the item ends. Why: the writer rolls back an item
 * that logs more than EG_WRITER_ITEM_LOG_MAX, and a step retried forever
 * stalls every kind after it. A deleted key logs one WalOp (eg_wal__log:
 * DB name, kind, key, each tag and length framed); the longest is a
 * posting with 128-byte tenant, user and session ids, a 411-byte key
 * (3 * (1 + 128) + 3 * 8) logged in 434 bytes ("message_terms" 15, kind 2,
 * key 1 + 2 + 411, the op's own tag and length 3). So 100000 keys log at
 * most 43.4 MB, under the 48 MiB (50.3 MB) bound, leaving about 6.9 MB
 * for the rest of the step (at --sweep-batch 500, sessions retired and
 * memories purged log far less). */
#define EG_SWEEP_STEP_KEYS_MAX 100000
_Static_assert((size_t)EG_SWEEP_STEP_KEYS_MAX * 434 < EG_WRITER_ITEM_LOG_MAX,
               "a sweeper step's message deletes must fit the writer's item log bound");

/* The tenant's effective policy: its stored one over cfg's defaults, in
 * seconds (0 keeps forever). is_default[i] is set where the tenant has no
 * value of its own. Tiers in the order of RetentionPolicyRecord. */
enum { EG_TIER_SESSION = 0, EG_TIER_MESSAGES = 1, EG_TIER_TOMBSTONE = 2, EG_TIERS = 3 };
typedef struct {
  int64_t seconds[EG_TIERS];
  int is_default[EG_TIERS];
} eg_retention;
eg_err eg_retention_effective(eg_txn *t, const eg_config *cfg, const char *tenant,
                              eg_retention *out);

/* Starts the thread; it submits to writer, and sweeps only while repl says
 * this node is the primary. EG_ENOMEM or EG_EUNAVAIL with err set. */
eg_err eg_sweeper_start(const eg_config *cfg, eg_writer *writer, const struct eg_repl *repl,
                        eg_sweeper **out, char *err, size_t errlen);
/* Stops the thread after its item in flight (the writer must still run),
 * and frees s. NULL is fine. */
void eg_sweeper_stop(eg_sweeper *s);

/* The stats (and metrics) show store expiry beside the sweep_due kinds,
 * as one more kind: 1..EG_SWEEP_KIND_MAX, then this one. */
#define EG_SWEEP_STORE_EXPIRE (EG_SWEEP_KIND_MAX + 1)
#define EG_SWEEP_STAT_KINDS (EG_SWEEP_STORE_EXPIRE + 1)

typedef struct {
  uint64_t swept[EG_SWEEP_STAT_KINDS];  /* records deleted, by kind */
  uint64_t backlog[EG_SWEEP_STAT_KINDS]; /* due, left for a later step */
  int64_t last_sweep_us; /* end of the last full pass; 0: none yet */
} eg_sweeper_stats;
/* Thread safety: any thread. s may be NULL (all zeros). */
/* The metric label of a kind of the stats (1..EG_SWEEP_STORE_EXPIRE). */
const char *eg_sweep_kind_name(unsigned kind);
void eg_sweeper_get_stats(const eg_sweeper *s, eg_sweeper_stats *out);

#endif
