/*
 * The writer thread: group commit.
 *
 * Workers submit write items and go back to serving. The writer takes
 * everything queued (up to a cap), applies each item in a nested txn of one
 * LMDB write txn, commits once for the whole batch, and only once that
 * commit is durable calls every item's done callback. With an empty queue
 * it commits at once, so a lone client pays no batching delay. On a store
 * opened with defer_meta_sync (engramd's --meta-sync next-flush) a commit
 * is durable only at the next flush: the batch's callbacks wait for the
 * next batch's commit, or, with nothing queued, for an eg_store_sync made
 * at once (docs/architecture.md, "Durability"). Callbacks of a batch that
 * committed nothing wait for the batch before it likewise.
 *
 * This thread is the only one that opens write txns and grows the map
 * (storage.h). Work that cannot run in a nested txn (applying a primary's
 * log record, which commits at that record's LSN; a promotion's epoch
 * record) comes as an item marked `alone`: the writer cuts the batch before
 * and after it and runs it by itself in its own write txn.
 */
#ifndef EG_SERVER_WRITER_H
#define EG_SERVER_WRITER_H

#include <stdint.h>

#include "common/err.h"
#include "storage/storage.h"

typedef struct eg_write_item eg_write_item;
struct eg_write_item {
  eg_write_item *next; /* the writer's queue link */
  /* Runs in a nested txn (with `alone`: in the batch's write txn itself,
   * the only item of that batch); may run again if the batch is replayed
   * after the map grew. A non-OK result rolls back this item only. */
  eg_err (*apply)(eg_write_item *item, eg_txn *t);
  /* Called once, on the writer thread, after the batch's commit is durable:
   * err is the item's apply result, the commit's failure, or EG_EBROKEN
   * when the flush it waited for failed; lsn the batch's LSN; busy
   * says more writes are already queued (so work done here delays them). */
  void (*done)(eg_write_item *item, eg_err err, uint64_t lsn, int busy);
  int alone; /* run in a write txn of its own, not nested in a batch */
  /* About what apply writes (the request's size): a batch stops before its
   * items' sum passes EG_WRITER_BATCH_BYTES (a larger item is a batch by
   * itself), so one commit's log record stays small enough for a replica
   * to receive. 0: small. An estimate only: what the items really log
   * bounds the batch too (eg_writer.c), and an item that logs more than
   * EG_WRITER_ITEM_LOG_MAX fails EG_ELIMIT, rolled back, with why. */
  size_t bytes;
  char *why; /* where that failure's message goes (whylen bytes); may be NULL */
  size_t whylen;
};

/* Most bytes of log ops one item may make: a commit's log record goes to
 * replicas in one message (they receive at most 64 MiB); a batch stops
 * taking items once it logged EG_WRITER_BATCH_BYTES, so a record stays
 * under 8 MiB + this. */
#define EG_WRITER_ITEM_LOG_MAX ((size_t)48 << 20)

typedef struct eg_writer eg_writer;

/* Log retention: returns the LSN below which log records may go, read
 * through t (the batch's txn). */
typedef uint64_t (*eg_trim_fn)(void *arg, eg_txn *t);

/* Starts the writer thread over s. With trim (may be NULL), each batch
 * also drops a bounded number of log records below trim's answer. On
 * failure (EG_ENOMEM, or EG_EUNAVAIL when the thread cannot start) err
 * says "cannot start the writer thread: <why>" and nothing is left over. */
eg_err eg_writer_start(eg_store *s, eg_trim_fn trim, void *trim_arg, eg_writer **out, char *err,
                       size_t errlen);
/* Queues an item. Thread safety: any thread. */
void eg_writer_submit(eg_writer *w, eg_write_item *item);
/* Runs fn(arg, t) as an `alone` item: on the writer thread, in a write txn
 * of its own (no nested txn, so eg_store_wal_apply and eg_store_set_epoch
 * may be used), replayed after the map grows, then committed; waits for
 * that. Returns fn's error or the commit's; *lsn (may be NULL) gets the
 * LSN committed (0 if nothing was). Thread safety: any thread but the
 * writer's own (it would wait for itself). */
eg_err eg_writer_run_alone(eg_writer *w, eg_err (*fn)(void *arg, eg_txn *t), void *arg,
                           uint64_t *lsn);
/* Write txns committed and items applied so far. Thread safety: any thread. */
void eg_writer_stats(const eg_writer *w, uint64_t *batches, uint64_t *items);

/* Finishes every queued item, stops the thread, frees w. */
void eg_writer_stop(eg_writer *w);

#endif
