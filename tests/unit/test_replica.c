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
  eg_store *s = NULL;
  char err[256] = "";
  eg_err e = eg_store_open(dir, &o, &s, err, sizeof err);
  if (e) fprintf(stderr, "eg_store_open(%s): %s: %s\n", dir, eg_err_name(e), err);
  CU_ASSERT_EQUAL_FATAL(e, EG_OK);
  return s;
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
  CU_ASSERT_EQUAL_FATAL(eg_repl_new(&cfg, s, &r), EG_OK);
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
  CU_ASSERT_EQUAL(eg_repl_trim_below(r, t), 10);
  eg_store_reader_end(t);
  eg_store_reader_free(t);
  eg_repl_free(r);
  /* A day's retention keeps them all: nothing below the oldest, LSN 1. */
  r = primary_repl(s, 1000000, 86400, 10000000);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_new(s, &t), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_reader_begin(t), EG_OK);
  CU_ASSERT_EQUAL(eg_repl_trim_below(r, t), 1);
  eg_store_reader_end(t);
  eg_store_reader_free(t);
  eg_repl_free(r);
  eg_store_close(s);
}

void eg_test_register_replica(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("replica", NULL, NULL, setup, teardown);
  CU_add_test(s, "age retention trims every old record", test_trim_below_by_age);
}
