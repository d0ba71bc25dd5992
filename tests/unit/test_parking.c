/* parking: reads parked until an LSN, over a real store in a temp dir.
 * Commits are made by the test itself; every wait for the parking thread
 * is bounded (WAIT_S) and fails the test when the bound passes. */
#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "server/parking.h"
#include "storage/storage.h"
#include "suites.h"

/* Only a bound so a broken parking thread fails instead of hanging. */
#define WAIT_S 60
#define FAR_US ((int64_t)WAIT_S * 2 * 1000000)
#define TENANT "t"

static char tdir[4096];
static eg_store *store;
static eg_parking *parking;
static int stopped; /* the test stopped parking itself */

/* Guards the fields of every test_parked; signalled when one runs. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* Tests keep these static: after a failed assertion returns early, the
 * parking thread may still hold them. */
typedef struct {
  eg_parked p;
  int runs, ready;
  int64_t ran_at_us;  /* eg_mono_us() when it ran */
  uint64_t seen_lsn;  /* the LSN its read txn saw (ready only) */
  int found;          /* its read found session "s<lsn>" */
} test_parked;

static void setup(void) {
  snprintf(tdir, sizeof tdir, "%s", eg_test_tmpdir());
  char err[256] = "";
  eg_store_opts o = {0};
  store = NULL;
  parking = NULL;
  stopped = 0;
  if (eg_store_open(tdir, &o, &store, err, sizeof err) != EG_OK) {
    fprintf(stderr, "eg_store_open: %s\n", err);
    return;
  }
  if (eg_parking_start(store, &parking) != EG_OK) parking = NULL;
}

static void teardown(void) {
  if (!stopped) eg_parking_stop(parking);
  eg_parking_free(parking);
  eg_store_close(store);
  eg_test_rmdir(tdir);
}

/* Reads the session named after the parked LSN, as a parked read would. */
static void parked_run(eg_parked *p, int ready, eg_txn *reader) {
  test_parked *tp = (test_parked *)p;
  uint64_t lsn = 0;
  int found = 0;
  if (ready && eg_store_reader_begin(reader) == EG_OK) {
    char sid[32];
    eg_session_rec *rec;
    snprintf(sid, sizeof sid, "s%llu", (unsigned long long)p->lsn);
    eg_store_txn_lsn(reader, &lsn);
    if (eg_store_session_get(reader, TENANT, sid, &rec) == EG_OK) {
      found = 1;
      engram__storage__v1__session_record__free_unpacked(rec, NULL);
    }
    eg_store_reader_end(reader);
  }
  pthread_mutex_lock(&mu);
  tp->runs++;
  tp->ready = ready;
  tp->ran_at_us = eg_mono_us();
  tp->seen_lsn = lsn;
  tp->found = found;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void park(test_parked *tp, uint64_t lsn, int64_t in_us) {
  memset(tp, 0, sizeof *tp);
  tp->p.lsn = lsn;
  tp->p.until_us = eg_mono_us() + in_us;
  tp->p.run = parked_run;
  CU_ASSERT_EQUAL_FATAL(eg_parking_add(parking, &tp->p), 0);
}

/* Waits (bounded) until tp has run; returns 0, or -1 at the bound. */
static int wait_run(test_parked *tp) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += WAIT_S;
  int rc = 0;
  pthread_mutex_lock(&mu);
  while (!tp->runs && rc == 0) rc = pthread_cond_timedwait(&cv, &mu, &until);
  int ran = tp->runs;
  pthread_mutex_unlock(&mu);
  return ran ? 0 : -1;
}

static int runs(test_parked *tp) {
  pthread_mutex_lock(&mu);
  int n = tp->runs;
  pthread_mutex_unlock(&mu);
  return n;
}

/* Commits one write txn holding session "s<its lsn>"; returns the LSN. */
static uint64_t commit_one(void) {
  char sid[32];
  eg_txn *w;
  uint64_t lsn;
  snprintf(sid, sizeof sid, "s%llu", (unsigned long long)eg_store_last_lsn(store) + 1);
  eg_session_rec r = ENGRAM__STORAGE__V1__SESSION_RECORD__INIT;
  r.session_id = sid;
  r.user_id = (char *)"u";
  r.agent_id = (char *)"a";
  CU_ASSERT_EQUAL_FATAL(eg_store_write_begin(store, &w), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_session_put(w, TENANT, &r, NULL), EG_OK);
  CU_ASSERT_EQUAL_FATAL(eg_store_write_commit(w, &lsn), EG_OK);
  return lsn;
}

/* ---- tests ----------------------------------------------------------------- */

/* A read parked for the next LSN runs (ready) once that commit lands, and
 * its read txn sees the commit. */
static void test_runs_when_lsn_commits(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(parking);
  static test_parked a;
  uint64_t want = eg_store_last_lsn(store) + 1;
  park(&a, want, FAR_US);
  /* Neither its LSN nor its deadline has come: it cannot have run. */
  CU_ASSERT_EQUAL(runs(&a), 0);
  CU_ASSERT_EQUAL(commit_one(), want);
  CU_ASSERT_EQUAL_FATAL(wait_run(&a), 0);
  CU_ASSERT_EQUAL(a.ready, 1);
  CU_ASSERT(a.seen_lsn >= want);
  CU_ASSERT_EQUAL(a.found, 1);
  CU_ASSERT_EQUAL(runs(&a), 1);
}

/* Reads parked for different LSNs run one by one as each commits. */
static void test_runs_in_lsn_order(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(parking);
  static test_parked a, b;
  uint64_t base = eg_store_last_lsn(store);
  park(&b, base + 2, FAR_US);
  park(&a, base + 1, FAR_US);
  commit_one();
  CU_ASSERT_EQUAL_FATAL(wait_run(&a), 0);
  CU_ASSERT_EQUAL(a.ready, 1);
  CU_ASSERT_EQUAL(a.found, 1);
  /* The pass that ran a saw base + 1 only, so b stayed parked. */
  CU_ASSERT_EQUAL(runs(&b), 0);
  commit_one();
  CU_ASSERT_EQUAL_FATAL(wait_run(&b), 0);
  CU_ASSERT_EQUAL(b.ready, 1);
  CU_ASSERT_EQUAL(b.found, 1);
}

/* An LSN already in (a commit raced the park) runs without another commit. */
static void test_lsn_already_in(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(parking);
  static test_parked a;
  uint64_t lsn = commit_one();
  park(&a, lsn, FAR_US);
  CU_ASSERT_EQUAL_FATAL(wait_run(&a), 0);
  CU_ASSERT_EQUAL(a.ready, 1);
  CU_ASSERT_EQUAL(a.found, 1);
}

/* With no commit, a read runs not ready at its deadline, never before;
 * one parked with a later deadline stays. */
static void test_times_out_at_deadline(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(parking);
  static test_parked soon, later;
  uint64_t far = eg_store_last_lsn(store) + 1000;
  park(&later, far, FAR_US);
  park(&soon, far, 50 * 1000);
  CU_ASSERT_EQUAL_FATAL(wait_run(&soon), 0);
  CU_ASSERT_EQUAL(soon.ready, 0);
  CU_ASSERT(soon.ran_at_us >= soon.p.until_us);
  CU_ASSERT_EQUAL(runs(&later), 0);
  /* later lives on this stack: answer it before returning. */
  eg_parking_stop(parking);
  stopped = 1;
  CU_ASSERT_EQUAL(runs(&later), 1);
}

/* Stop runs every parked read (not ready) before it returns; a read
 * parked after that is refused, for its caller to answer. */
static void test_stop_answers_everything(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(parking);
  static test_parked ps[5], late;
  uint64_t far = eg_store_last_lsn(store) + 1000;
  for (int i = 0; i < 5; i++) park(&ps[i], far, FAR_US);
  eg_parking_stop(parking);
  stopped = 1;
  for (int i = 0; i < 5; i++) {
    CU_ASSERT_EQUAL(runs(&ps[i]), 1);
    CU_ASSERT_EQUAL(ps[i].ready, 0);
  }
  memset(&late, 0, sizeof late);
  late.p.lsn = far;
  late.p.run = parked_run;
  CU_ASSERT_EQUAL(eg_parking_add(parking, &late.p), -1);
  CU_ASSERT_EQUAL(runs(&late), 0);
}

void eg_test_register_parking(void) {
  CU_pSuite s = CU_add_suite_with_setup_and_teardown("parking", NULL, NULL, setup, teardown);
  CU_add_test(s, "runs when its lsn commits", test_runs_when_lsn_commits);
  CU_add_test(s, "runs in lsn order", test_runs_in_lsn_order);
  CU_add_test(s, "lsn already in", test_lsn_already_in);
  CU_add_test(s, "times out at its deadline", test_times_out_at_deadline);
  CU_add_test(s, "stop answers everything", test_stop_answers_everything);
}
