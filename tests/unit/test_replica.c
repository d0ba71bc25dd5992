/* replica/: the decisions of the replication module against real stores
 * in temp dirs: log retention (trim floor), where a replica's stream
 * starts (shared history), the install check of a downloaded snapshot,
 * promotion against a snapshot restart; and the writer's `alone` items,
 * through which the module makes every write. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <fcntl.h>
#include <grpc/grpc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "replica/internal.h"
#include "server/writer.h"
#include "storage/storage.h"
#include "suites.h"

#define MIB ((size_t)1 << 20)

/* ---- helpers -------------------------------------------------------------- */

static char dir[4096];

static void setup(void) { snprintf(dir, sizeof dir, "%s", eg_test_tmpdir()); }
static void teardown(void) { eg_test_rmdir(dir); }

static eg_store *open_store(void) {
  eg_store_opts o = {.map_size = 16 * MIB};
  return eg_test_store_open(dir, &o);
}

/* n commits, each one log record (with no data ops). */
static void commit_n(eg_store *s, int n) {
  for (int i = 0; i < n; i++) {
    eg_txn *w;
    CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(s, &w), EG_OK);
    CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, NULL), EG_OK);
  }
}

/* A primary-role module over s with these retention settings. */
static eg_repl *primary_repl(eg_store *s, int64_t records, int64_t secs, int64_t cap) {
  eg_repl_config cfg = {.replica_id = "test", .retain_records = records, .retain_s = secs,
                        .retain_cap = cap};
  eg_repl *r = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_repl_new(&cfg, s, &r, NULL, 0), EG_OK);
  return r;
}

/* Waits until the clock passed t (records then are older than t). */
static void pass_time(int64_t t) {
  while (eg_now_us() <= t) usleep(100);
}

/* ---- bug 2: retention by age trims every old record --------------------- */

/* All records older than --wal-retain-s go in one batch (bounded by the
 * batch's count), not one per batch; the newest one stays, as a
 * reconnecting replica checks its history against it. */
static void test_trim_below_by_age(void) {
  eg_store *s = open_store();
  commit_n(s, 10);
  pass_time(eg_now_us());
  eg_repl *r = primary_repl(s, 1000000, 0, 10000000);
  eg_txn *t;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &t), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(t), EG_OK);
  CU_ASSERT_EQUAL(eg_repl_trim_below(r, t, 0), 10);
  eg_store_reader_end(t);
  eg_store_reader_free(t);
  eg_repl_free(r);
  /* A day's retention keeps them all: nothing below the oldest, LSN 1. */
  r = primary_repl(s, 1000000, 86400, 10000000);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &t), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(t), EG_OK);
  CU_ASSERT_EQUAL(eg_repl_trim_below(r, t, 0), 1);
  eg_store_reader_end(t);
  eg_store_reader_free(t);
  eg_repl_free(r);
  eg_store_close(s);
}

/* The floor itself, input by input. */
static void test_trim_floor(void) {
  uint64_t held[2] = {40, 95};
  eg_trim_view v = {.last = 100, .first = 1, .young = 1, .retain_records = 1000,
                    .retain_cap = 1000};
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 1); /* nothing old, few records */
  v.retain_records = 10;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 91); /* keeps the newest 10 */
  v.young = 96;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 96); /* age goes further */
  v.young = 101;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 100); /* all old: the newest stays */
  v.held = held;
  v.n_held = 2;
  /* A replica at 40 needs 40 on: its next hello checks its history
   * against the record at its applied LSN. */
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 40);
  v.retain_cap = 50;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 51); /* but no more than the cap */
  v.erase_floor = 99;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 99); /* erasure overrides */
  v.first = 0;
  CU_ASSERT_EQUAL(eg_repl_trim_floor(&v), 0); /* empty log */
}

/* Whether the age bound can move the floor: not while a connected replica
 * holds the log at its first record (the walk to the first young record
 * would be wasted on every batch). */
static void test_trim_age_matters(void) {
  uint64_t held[2] = {40, 95};
  eg_trim_view v = {.last = 100, .first = 30, .retain_records = 10, .retain_cap = 1000};
  CU_ASSERT_TRUE(eg_repl_trim_age_matters(&v)); /* no replica */
  v.held = held;
  v.n_held = 2;
  CU_ASSERT_TRUE(eg_repl_trim_age_matters(&v)); /* 30..39 may go by age */
  v.first = 40;
  CU_ASSERT_FALSE(eg_repl_trim_age_matters(&v)); /* the replica at 40 holds all */
  v.first = 41;
  CU_ASSERT_FALSE(eg_repl_trim_age_matters(&v)); /* trimmed past it already */
  v.retain_cap = 50; /* the cap lets 40..50 go: the replica holds nothing past it */
  CU_ASSERT_TRUE(eg_repl_trim_age_matters(&v));
  v.first = 0;
  CU_ASSERT_FALSE(eg_repl_trim_age_matters(&v)); /* empty log */
}

/* The walk to the first young record: bounded, and past the end when
 * every record is old. */
static void test_wal_first_after(void) {
  eg_store *s = open_store();
  eg_txn *t;
  uint64_t lsn = 0;
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &t), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(t), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_first_after(t, 0, 10, &lsn), EG_ENOTFOUND);
  eg_store_reader_end(t);
  commit_n(s, 5);
  int64_t mid = eg_now_us();
  pass_time(mid);
  commit_n(s, 5);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(t), EG_OK);
  CU_ASSERT_EQUAL(eg_store_wal_first_after(t, mid, 100, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 6);
  CU_ASSERT_EQUAL(eg_store_wal_first_after(t, mid, 3, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 4); /* walked 3 old ones */
  CU_ASSERT_EQUAL(eg_store_wal_first_after(t, 0, 100, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 1);
  CU_ASSERT_EQUAL(eg_store_wal_first_after(t, INT64_MAX, 100, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 11);
  eg_store_reader_end(t);
  eg_store_reader_free(t);
  eg_store_close(s);
}

/* ---- where a stream starts ------------------------------------------------ */

/* eg_repl_stream_start on v, checked to say EG_OK; returns where the
 * stream starts (0: resync). */
static uint64_t start_next(const eg_stream_view *v, const char **why) {
  uint64_t next = 99;
  CU_ASSERT_EQUAL(eg_repl_stream_start(v, &next, why), EG_OK);
  return next;
}

static void test_stream_start(void) {
  uint64_t next = 99;
  const char *why = NULL;
  /* caught up at the same epoch: continue */
  eg_stream_view v = {.last = 100, .first = 1, .epoch = 2, .epoch_at = 2, .hello_epoch = 2,
                      .applied = 100, .applied_epoch = 2};
  CU_ASSERT_EQUAL(start_next(&v, &why), 101);
  /* an older replica whose record matches: continue */
  v.hello_epoch = 1, v.applied = 50, v.applied_epoch = 1, v.epoch_at = 1;
  CU_ASSERT_EQUAL(start_next(&v, &why), 51);
  /* an older replica that diverged (a deposed primary): resync */
  v.epoch_at = 2;
  CU_ASSERT_EQUAL(start_next(&v, &why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "epoch mismatch"));
  /* the same epoch as ours, but records of it we never wrote: refused */
  v.hello_epoch = 2, v.applied_epoch = 2, v.epoch_at = 1;
  CU_ASSERT_EQUAL(eg_repl_stream_start(&v, &next, &why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "split brain"));
  /* equal LSN and epoch, other bytes (two nodes promoted from one LSN):
   * refused at our epoch, resynced from an older one; no digest (an older
   * replica): the epoch check alone */
  v.epoch_at = 2, v.digest_sent = 1, v.digest_equal = 0;
  CU_ASSERT_EQUAL(eg_repl_stream_start(&v, &next, &why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "split brain"));
  v.digest_equal = 1;
  CU_ASSERT_EQUAL(start_next(&v, &why), 51);
  v.hello_epoch = 1, v.applied_epoch = 1, v.epoch_at = 1, v.digest_equal = 0;
  CU_ASSERT_EQUAL(start_next(&v, &why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "differs"));
  v.digest_sent = 0;
  CU_ASSERT_EQUAL(start_next(&v, &why), 51);
  v.hello_epoch = 2, v.applied_epoch = 2, v.epoch_at = 1;
  /* ahead of us: resync if older, refused at our epoch */
  v.applied = 120;
  CU_ASSERT_EQUAL(eg_repl_stream_start(&v, &next, &why), EG_EPRECOND);
  v.hello_epoch = 1;
  CU_ASSERT_EQUAL(start_next(&v, &why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "ahead"));
  /* from a newer epoch: this primary was deposed */
  v.hello_epoch = 3, v.applied = 100;
  CU_ASSERT_EQUAL(eg_repl_stream_start(&v, &next, &why), EG_EPRECOND);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "deposed"));
  /* behind the trimmed log, or unreadable */
  v.hello_epoch = 2, v.applied = 10, v.at_err = EG_ENOTFOUND;
  CU_ASSERT_EQUAL(start_next(&v, &why), 0);
  v.at_err = EG_EIO;
  CU_ASSERT_EQUAL(eg_repl_stream_start(&v, &next, &why), EG_EIO);
  /* an empty replica: from 1 if the whole log is there */
  v = (eg_stream_view){.last = 100, .first = 1, .epoch = 1, .hello_epoch = 1};
  CU_ASSERT_EQUAL(start_next(&v, &why), 1);
  v.first = 7;
  CU_ASSERT_EQUAL(start_next(&v, &why), 0);
}

/* Lifecycle indexes built at another LSN than the primary's (a schema
 * upgrade back-fills them unlogged): resync, even from a shared history;
 * the refusals still come first. */
static void test_stream_start_index_base(void) {
  uint64_t next = 99;
  const char *why = NULL;
  eg_stream_view v = {.last = 200, .first = 1, .epoch = 2, .epoch_at = 2, .hello_epoch = 2,
                      .applied = 150, .applied_epoch = 2, .index_base = 200,
                      .hello_index_base = 150};
  CU_ASSERT_EQUAL(eg_repl_stream_start(&v, &next, &why), EG_OK);
  CU_ASSERT_EQUAL_FATAL(next, 0);
  CU_ASSERT_STRING_EQUAL(why, "indexes built at another LSN (schema upgrade)");
  /* A replica created at v4 (0) replaying an upgraded primary's log. */
  v.hello_index_base = 0;
  CU_ASSERT_EQUAL(start_next(&v, &why), 0);
  v.applied = 0, v.applied_epoch = 0, v.hello_epoch = 1;
  CU_ASSERT_EQUAL(start_next(&v, &why), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "schema upgrade"));
  /* Equal: streams on. */
  v.hello_index_base = 200;
  CU_ASSERT_EQUAL(start_next(&v, &why), 1);
  v.applied = 150, v.applied_epoch = 2, v.hello_epoch = 2;
  CU_ASSERT_EQUAL(start_next(&v, &why), 151);
  /* Split brain is refused whatever the bases. */
  v.hello_index_base = 7, v.epoch_at = 1;
  CU_ASSERT_EQUAL(eg_repl_stream_start(&v, &next, &why), EG_EPRECOND);
}

/* ---- bug 3: a snapshot is checked before it may be installed ------------ */

static void test_snapshot_check(void) {
  char path[4200], why[256];
  eg_store *s = open_store();
  commit_n(s, 200);
  eg_store_file_info info;
  snprintf(path, sizeof path, "%s/copy.mdb", dir);
  CU_ASSERT_EQUAL_FATAL(eg_store_copy(s, path, &info), EG_OK);
  uint64_t lsn = info.lsn, epoch = info.epoch;
  CU_ASSERT_EQUAL(info.schema_version, EG_STORE_SCHEMA_VERSION);
  eg_store_close(s);
  CU_ASSERT_EQUAL(lsn, 200);
  CU_ASSERT_EQUAL(eg_store_file_check(path, lsn, epoch, &info, why, sizeof why), EG_OK);
  /* not what the primary announced */
  CU_ASSERT_EQUAL(eg_store_file_check(path, lsn + 1, epoch, &info, why, sizeof why), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "announced"));
  CU_ASSERT_EQUAL(eg_store_file_check(path, lsn, epoch + 1, &info, why, sizeof why), EG_ECORRUPT);
  /* cut short (as a read error on the primary used to send it): refused,
   * and without touching the missing pages */
  struct stat st;
  CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
  CU_ASSERT_FATAL(st.st_size > 4 * 4096);
  CU_ASSERT_EQUAL_FATAL(truncate(path, st.st_size - 4096), 0);
  CU_ASSERT_EQUAL(eg_store_file_check(path, lsn, epoch, &info, why, sizeof why), EG_ECORRUPT);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not a readable store"));
  /* garbage */
  int fd = open(path, O_WRONLY | O_TRUNC);
  CU_ASSERT_FATAL(fd >= 0);
  char junk[3 * 4096];
  memset(junk, 0x5a, sizeof junk);
  CU_ASSERT_EQUAL(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
  close(fd);
  CU_ASSERT_EQUAL(eg_store_file_check(path, lsn, epoch, &info, why, sizeof why), EG_ECORRUPT);
  /* empty */
  CU_ASSERT_EQUAL_FATAL(truncate(path, 0), 0);
  CU_ASSERT_EQUAL(eg_store_file_check(path, lsn, epoch, &info, why, sizeof why), EG_ECORRUPT);
}

/* ---- bug 4: promotion and a snapshot restart exclude each other --------- */

static void test_promote_vs_restart(void) {
  const char *why = NULL;
  eg_store *s = open_store();
  eg_repl *r = primary_repl(s, 1000, 86400, 10000);
  CU_ASSERT_EQUAL(eg_repl_claim_promotion(r, &why), EG_EPRECOND); /* a primary */
  atomic_store(&r->is_primary, 0);                                 /* now a replica */
  /* a restart decided first: Promote is refused, and says why */
  CU_ASSERT_EQUAL(eg_repl_claim_restart(r), 1);
  CU_ASSERT_EQUAL(eg_repl_claim_promotion(r, &why), EG_EUNAVAIL);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "snapshot"));
  CU_ASSERT_EQUAL(atomic_load(&r->promoting), 0);
  eg_repl_free(r);
  /* a promotion first: no restart, and no second promotion */
  r = primary_repl(s, 1000, 86400, 10000);
  atomic_store(&r->is_primary, 0);
  CU_ASSERT_EQUAL(eg_repl_claim_promotion(r, &why), EG_OK);
  CU_ASSERT_EQUAL(eg_repl_claim_restart(r), 0);
  CU_ASSERT_EQUAL(eg_repl_restart_requested(r), 0);
  CU_ASSERT_EQUAL(eg_repl_claim_promotion(r, &why), EG_EPRECOND);
  eg_repl_free(r);
  eg_store_close(s);
}

/* ---- the writer's `alone` items ----------------------------------------- */

/* An item that holds the writer until released, so a queue builds up. */
struct gate {
  eg_write_item item;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int entered, open;
  uint64_t lsn;
  eg_err err;
};

static eg_err gate_apply(eg_write_item *it, eg_txn *t) {
  struct gate *g = (struct gate *)it;
  pthread_mutex_lock(&g->mu);
  g->entered = 1;
  pthread_cond_broadcast(&g->cv);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
  return EG_OK;
}

/* A plain item: records the LSN it was committed at. */
struct plain {
  eg_write_item item;
  uint64_t lsn;
  eg_err err;
};
static eg_err plain_apply(eg_write_item *it, eg_txn *t) { return EG_OK; }
static void plain_done(eg_write_item *it, eg_err err, uint64_t lsn, int busy) {
  ((struct plain *)it)->lsn = lsn;
  ((struct plain *)it)->err = err;
}
static void gate_done(eg_write_item *it, eg_err err, uint64_t lsn, int busy) {
  ((struct gate *)it)->lsn = lsn;
}

/* An alone item starting epoch 2, submitted without waiting. */
static eg_err epoch_apply(eg_write_item *it, eg_txn *t) { return eg_store_set_epoch(t, 2); }

static eg_err set_epoch_3(void *arg, eg_txn *t) { return eg_store_set_epoch(t, 3); }
static eg_err fail_item(void *arg, eg_txn *t) {
  ++*(int *)arg;
  return EG_EINVAL;
}

/* Queued around an `alone` item, plain items commit in batches of their
 * own before and after it; the alone item runs in the write txn itself
 * (eg_store_set_epoch refuses a nested txn). */
static void test_writer_alone(void) {
  eg_store *s = open_store();
  eg_writer *w;
  CU_ASSERT_EQUAL_FATAL(eg_writer_start(s, NULL, NULL, &w, NULL, 0), EG_OK);
  struct gate g = {.item = {.apply = gate_apply, .done = gate_done}};
  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  eg_writer_submit(w, &g.item);
  pthread_mutex_lock(&g.mu);
  while (!g.entered) pthread_cond_wait(&g.cv, &g.mu);
  pthread_mutex_unlock(&g.mu);
  /* The writer is held inside the gate: queue plain, alone, plain, plain. */
  struct plain a = {.item = {.apply = plain_apply, .done = plain_done}};
  struct plain b = a, c = a, x = {.item = {.apply = epoch_apply, .done = plain_done, .alone = 1}};
  eg_writer_submit(w, &a.item);
  eg_writer_submit(w, &x.item);
  eg_writer_submit(w, &b.item);
  eg_writer_submit(w, &c.item);
  pthread_mutex_lock(&g.mu);
  g.open = 1;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);

  /* Through the writer, waiting: success gives the LSN; a failure
   * commits nothing. */
  int calls = 0;
  uint64_t lsn = 99;
  CU_ASSERT_EQUAL(eg_writer_run_alone(w, set_epoch_3, NULL, &lsn), EG_OK);
  CU_ASSERT_EQUAL(lsn, 5);
  CU_ASSERT_EQUAL(eg_store_epoch(s), 3);
  CU_ASSERT_EQUAL(eg_writer_run_alone(w, fail_item, &calls, &lsn), EG_EINVAL);
  CU_ASSERT_EQUAL(calls, 1);
  CU_ASSERT_EQUAL(lsn, 0);
  CU_ASSERT_EQUAL(eg_store_last_lsn(s), 5);
  eg_writer_stop(w); /* finishes what is queued */

  CU_ASSERT_EQUAL(g.lsn, 1);
  CU_ASSERT_EQUAL(a.err, EG_OK);
  CU_ASSERT_EQUAL(a.lsn, 2); /* cut before the alone item */
  CU_ASSERT_EQUAL(x.err, EG_OK);
  CU_ASSERT_EQUAL(x.lsn, 3); /* by itself */
  CU_ASSERT_EQUAL(b.lsn, 4); /* b and c together after it */
  CU_ASSERT_EQUAL(c.lsn, 4);
  pthread_mutex_destroy(&g.mu);
  pthread_cond_destroy(&g.cv);
  eg_store_close(s);
}

void eg_test_register_replica(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("replica", NULL, NULL, setup, teardown);
  CU_add_test(s, "age retention trims every old record", test_trim_below_by_age);
  CU_add_test(s, "trim floor: count, age, held, cap, erasure", test_trim_floor);
  CU_add_test(s, "trim: the age walk is skipped while a replica holds the log", test_trim_age_matters);
  CU_add_test(s, "wal_first_after: bounded walk to the first young record", test_wal_first_after);
  CU_add_test(s, "stream start: shared history, resync, refusals", test_stream_start);
  CU_add_test(s, "stream start: index base mismatch resyncs", test_stream_start_index_base);
  CU_add_test(s, "snapshot install check refuses truncated, garbage, unannounced", test_snapshot_check);
  CU_add_test(s, "promotion and snapshot restart exclude each other", test_promote_vs_restart);
  CU_add_test(s, "writer: alone items run in a txn of their own", test_writer_alone);
}
