#include "server/writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bgthread.h"
#include "common/log.h"

/* Most items one txn takes: bounds the time the first caller in a batch
 * waits behind the others. */
#define EG_WRITER_BATCH_MAX 1024
/* Most request bytes one txn takes (eg_write_item.bytes), and the log
 * bytes after which it takes no more items: its log record goes to
 * replicas in one message, which must stay well under what they receive
 * (the C client's 64 MiB), whatever the items (PutWrites carry up to 16
 * MiB each, a refresh of store items rewrites them whole). */
#define EG_WRITER_BATCH_BYTES ((size_t)8 << 20)
/* Most log records one batch trims: retention never stalls a write (an
 * erasure's backlog goes over the next batches). */
#define EG_WRITER_TRIM_MAX 1024

struct eg_writer {
  eg_store *store;
  eg_trim_fn trim;
  void *trim_arg;
  eg_bgthread bg;
  eg_write_item *head, *tail; /* guarded by bg.mu */
  atomic_uint_fast64_t batches, items;
  /* The last committed batch while its commit is not yet durable (a store
   * opened with defer_meta_sync): answered once the next commit's flush or
   * eg_store_sync made it so. Writer thread only; empty whenever the
   * thread waits for work. */
  eg_write_item *held;
  eg_err held_errs[EG_WRITER_BATCH_MAX];
  uint64_t held_lsn;
};

void eg_writer_stats(const eg_writer *w, uint64_t *batches, uint64_t *items) {
  *batches = atomic_load_explicit(&w->batches, memory_order_relaxed);
  *items = atomic_load_explicit(&w->items, memory_order_relaxed);
}

void eg_writer_submit(eg_writer *w, eg_write_item *item) {
  item->next = NULL;
  pthread_mutex_lock(&w->bg.mu);
  if (w->tail)
    w->tail->next = item;
  else
    w->head = item;
  w->tail = item;
  pthread_cond_signal(&w->bg.cv);
  pthread_mutex_unlock(&w->bg.mu);
}

/* Takes up to EG_WRITER_BATCH_MAX items; NULL once stopping and drained. */
static eg_write_item *eg_writer_take(eg_writer *w) {
  pthread_mutex_lock(&w->bg.mu);
  while (!w->head && !w->bg.stopping) pthread_cond_wait(&w->bg.cv, &w->bg.mu);
  eg_write_item *batch = w->head, *last = w->head;
  /* An `alone` item is a batch by itself; other batches stop before one,
   * and before their bytes pass the bound. */
  if (last && !last->alone) {
    size_t bytes = last->bytes;
    /* Requests are bounded far below SIZE_MAX: the sum cannot wrap. */
    for (int n = 1; last->next && !last->next->alone && n < EG_WRITER_BATCH_MAX &&
                    bytes + last->next->bytes <= EG_WRITER_BATCH_BYTES;
         n++) {
      last = last->next;
      bytes += last->bytes;
    }
  }
  if (last) {
    w->head = last->next;
    if (!w->head) w->tail = NULL;
    last->next = NULL;
  }
  pthread_mutex_unlock(&w->bg.mu);
  return batch;
}

/* e, the result of it's apply in t, or EG_ELIMIT (why set) when it logged
 * more than EG_WRITER_ITEM_LOG_MAX: a replica receives each record whole. */
static eg_err eg_writer_log_bound(eg_write_item *it, eg_txn *t, eg_err e) {
  size_t logged = eg_store_txn_log_bytes(t);
  if (e != EG_OK || logged <= EG_WRITER_ITEM_LOG_MAX) return e;
  if (it->why)
    snprintf(it->why, it->whylen,
             "this write would log %zu bytes in one record, more than %zu (a replica "
             "receives each record whole): write less in one call",
             logged, (size_t)EG_WRITER_ITEM_LOG_MAX);
  return EG_ELIMIT;
}

/* Applies the batch's items in order, each in a nested txn of t; item
 * results go to errs[], *applied counts the items kept, *ran the items
 * tried: once what the batch logged reaches EG_WRITER_BATCH_BYTES the
 * rest wait for the next batch (their estimates, eg_write_item.bytes,
 * missed what they write), and an item that logs more than
 * EG_WRITER_ITEM_LOG_MAX is rolled back, EG_ELIMIT. Returns EG_EMAPFULL
 * (the batch must be replayed) or another failure of t itself. */
static eg_err eg_writer_apply_nested(eg_txn *t, eg_write_item *batch, eg_err *errs, int *applied,
                                     int *ran) {
  eg_txn *sub;
  eg_err e;
  int i = 0;
  for (eg_write_item *it = batch; it; it = it->next, i++) {
    if (i > 0 && eg_store_txn_log_bytes(t) >= EG_WRITER_BATCH_BYTES) break;
    if ((e = eg_store_sub_begin(t, &sub)) != EG_OK) return e;
    errs[i] = eg_writer_log_bound(it, sub, it->apply(it, sub));
    if (errs[i] != EG_OK) {
      eg_store_sub_abort(sub);
      if (errs[i] == EG_EMAPFULL) return EG_EMAPFULL;
      continue;
    }
    if ((e = eg_store_sub_commit(sub)) != EG_OK) return e;
    (*applied)++;
  }
  *ran = i;
  return EG_OK;
}

/* Applies an `alone` item in t itself: its failure is the txn's. */
static eg_err eg_writer_apply_alone(eg_txn *t, eg_write_item *item, eg_err *errs, int *applied) {
  /* Over the bound, the txn is rolled back: its failure is the txn's. */
  errs[0] = eg_writer_log_bound(item, t, item->apply(item, t));
  if (errs[0] == EG_EMAPFULL) return EG_EMAPFULL;
  *applied = errs[0] == EG_OK;
  return EG_OK;
}

/* Applies the batch (its first *ran items: see eg_writer_apply_nested) in
 * one txn. Item results go to errs[]; returns the commit's result
 * (EG_EMAPFULL: grow and run again). */
static eg_err eg_writer_apply(eg_writer *w, eg_write_item *batch, eg_err *errs, uint64_t *lsn,
                              int *ran) {
  eg_txn *t;
  int applied = 0;
  *ran = 1;
  eg_err e = eg_store_write_begin(w->store, &t);
  if (e != EG_OK) return e;
  e = batch->alone ? eg_writer_apply_alone(t, batch, errs, &applied)
                   : eg_writer_apply_nested(t, batch, errs, &applied, ran);
  if (e != EG_OK) goto fail;
  if (!applied) {
    /* Nothing to make durable: every item failed its own checks. */
    eg_store_write_abort(t);
    *lsn = 0;
    return EG_OK;
  }
  if (w->trim && (e = eg_store_wal_trim(t, w->trim(w->trim_arg, t), EG_WRITER_TRIM_MAX, NULL))) goto fail;
  if ((e = eg_store_write_commit(t, lsn)) == EG_OK) {
    atomic_fetch_add_explicit(&w->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->items, (uint64_t)applied, memory_order_relaxed);
  }
  return e;
fail:
  eg_store_write_abort(t);
  return e;
}

/* Puts the items from rest on back at the front of the queue, in order. */
static void eg_writer_requeue(eg_writer *w, eg_write_item *rest) {
  eg_write_item *last = rest;
  while (last->next) last = last->next;
  pthread_mutex_lock(&w->bg.mu);
  last->next = w->head;
  w->head = rest;
  if (!w->tail) w->tail = last;
  pthread_mutex_unlock(&w->bg.mu);
}

/* Answers the items of batch: e (a failure of the whole batch) or each
 * one's errs[i]. */
static void eg_writer_answer(eg_write_item *batch, eg_err e, const eg_err *errs, uint64_t lsn,
                             int busy) {
  int i = 0;
  for (eg_write_item *it = batch, *next; it; it = next, i++) {
    next = it->next; /* done() may free the item */
    it->done(it, e != EG_OK ? e : errs[i], lsn, busy || next);
  }
}

/* Answers the held batch, flushing first unless a commit's flush already
 * made it durable. A failed flush fails it (the store is then broken:
 * eg_store_sync). */
static void eg_writer_release(eg_writer *w, int busy) {
  if (!w->held) return;
  eg_err e = eg_store_last_lsn(w->store) >= w->held_lsn ? EG_OK : eg_store_sync(w->store);
  eg_write_item *held = w->held;
  w->held = NULL;
  eg_writer_answer(held, e, w->held_errs, w->held_lsn, busy);
}

/* Answers a batch run with result e (its items' own in errs, LSN lsn) as
 * soon as what it says is durable. A committed batch's answers wait for
 * the next flush (deferred meta sync) and release the batch before it,
 * which this commit's flush made durable. Answers that did not commit
 * (every item failed, or the commit did) may rest on the held batch's
 * state: they go after it, flushed now. With nothing queued, nobody
 * else's commit is coming: flush now. */
static void eg_writer_settle(eg_writer *w, eg_write_item *batch, eg_err e, const eg_err *errs,
                             uint64_t lsn, int ran, int busy) {
  if (!eg_store_defers_meta_sync(w->store)) {
    eg_writer_answer(batch, e, errs, lsn, busy);
    return;
  }
  if (e == EG_OK && lsn) {
    eg_writer_release(w, 1);
    w->held = batch;
    memcpy(w->held_errs, errs, sizeof *errs * (size_t)ran);
    w->held_lsn = lsn;
  } else {
    eg_writer_release(w, 1);
    eg_writer_answer(batch, e, errs, lsn, busy);
  }
  if (!busy) eg_writer_release(w, 0);
}

static void eg_writer_run_batch(eg_writer *w, eg_write_item *batch) {
  eg_err errs[EG_WRITER_BATCH_MAX];
  uint64_t lsn = 0;
  int ran = 1;
  eg_err e;
  while ((e = eg_writer_apply(w, batch, errs, &lsn, &ran)) == EG_EMAPFULL) {
    if ((e = eg_store_grow(w->store)) != EG_OK) {
      eg_log(EG_LOG_ERROR, "cannot grow the storage map: %s", eg_err_msg(e));
      break;
    }
  }
  if (e == EG_OK) {
    /* The items the log bound left out go first in the next batch. */
    eg_write_item *end = batch;
    for (int i = 1; i < ran; i++) end = end->next;
    if (end->next) {
      eg_writer_requeue(w, end->next);
      end->next = NULL;
    }
  }
  pthread_mutex_lock(&w->bg.mu);
  int busy = w->head != NULL;
  pthread_mutex_unlock(&w->bg.mu);
  eg_writer_settle(w, batch, e, errs, lsn, ran, busy);
}

/* A caller waiting for its `alone` item (eg_writer_run_alone). */
struct eg_alone {
  eg_write_item item; /* first: the writer hands back &item */
  eg_err (*fn)(void *arg, eg_txn *t);
  void *arg;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int finished; /* guarded by mu */
  eg_err err;
  uint64_t lsn;
};

static eg_err eg_alone_apply(eg_write_item *item, eg_txn *t) {
  struct eg_alone *a = (struct eg_alone *)item;
  return a->fn(a->arg, t);
}

static void eg_alone_done(eg_write_item *item, eg_err err, uint64_t lsn, int busy) {
  struct eg_alone *a = (struct eg_alone *)item;
  (void)busy;
  pthread_mutex_lock(&a->mu);
  a->err = err;
  a->lsn = err == EG_OK ? lsn : 0;
  a->finished = 1;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

eg_err eg_writer_run_alone(eg_writer *w, eg_err (*fn)(void *arg, eg_txn *t), void *arg,
                           uint64_t *lsn) {
  struct eg_alone a = {.item = {.apply = eg_alone_apply, .done = eg_alone_done, .alone = 1},
                       .fn = fn,
                       .arg = arg};
  pthread_mutex_init(&a.mu, NULL);
  pthread_cond_init(&a.cv, NULL);
  eg_writer_submit(w, &a.item);
  pthread_mutex_lock(&a.mu);
  while (!a.finished) pthread_cond_wait(&a.cv, &a.mu);
  pthread_mutex_unlock(&a.mu);
  pthread_mutex_destroy(&a.mu);
  pthread_cond_destroy(&a.cv);
  if (lsn) *lsn = a.lsn;
  return a.err;
}

static void *eg_writer_main(void *arg) {
  eg_writer *w = arg;
  eg_write_item *batch;
  while ((batch = eg_writer_take(w))) eg_writer_run_batch(w, batch);
  return NULL;
}

eg_err eg_writer_start(eg_store *s, eg_trim_fn trim, void *trim_arg, eg_writer **out, char *err,
                       size_t errlen) {
  eg_writer *w = calloc(1, sizeof *w);
  if (!w) {
    snprintf(err, errlen, "cannot start the writer thread: out of memory");
    return EG_ENOMEM;
  }
  w->store = s;
  w->trim = trim;
  w->trim_arg = trim_arg;
  eg_err e = eg_bgthread_start(&w->bg, eg_writer_main, w, "writer", "writer", err, errlen);
  if (e != EG_OK) {
    free(w);
    return e;
  }
  *out = w;
  return EG_OK;
}

void eg_writer_stop(eg_writer *w) {
  if (!w) return;
  eg_bgthread_stop(&w->bg);
  free(w);
}
